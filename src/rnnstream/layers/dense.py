"""Per-step layers with no memory: Dense, Embedding, elementwise activations, identities.

>>> import numpy as np
>>> dense = Dense("d", W=np.float32([[1.0], [2.0]]), b=np.float32([0.5]), activation="linear")
>>> dense.apply([np.float32([[1.0, 1.0]])])
array([[3.5]], dtype=float32)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rnnstream.errors import InputError
from rnnstream.layers import activations
from rnnstream.layers.layer import StatelessLayer, TensorSpec, float_input, last_dim
from rnnstream.types import BoolArray, FloatArray


class Dense(StatelessLayer):
    """``y = act(x W + b)`` on the last axis, so on a sequence it applies per step."""

    kind = "dense"

    def __init__(
        self, name: str, *, W: FloatArray, b: FloatArray | None, activation: str, keras_major: int = 3
    ) -> None:
        super().__init__(name)
        self.W = W  # (I, O)
        self.b = b  # (O,) or None
        self.activation_name = activation
        self.keras_major = keras_major
        self.act = activations.get(activation, keras_major)

    def output_spec(self, x: TensorSpec) -> TensorSpec:
        features = last_dim(self, x)
        if features != self.W.shape[0]:
            raise self.refuse(f"kernel expects {self.W.shape[0]} input features, input has {features}")
        return TensorSpec((*x.shape[:-1], self.W.shape[1]), sequence=x.sequence)

    def apply(self, inputs: list[FloatArray]) -> FloatArray:
        z = inputs[0] @ self.W  # (B, ..., O)
        return self.act(z if self.b is None else z + self.b)

    def params(self) -> dict[str, FloatArray]:
        return {"W": self.W} if self.b is None else {"W": self.W, "b": self.b}

    def config(self) -> dict[str, Any]:
        return {"activation": self.activation_name, "keras_major": self.keras_major}


class Embedding(StatelessLayer):
    """Token ids ``[B]`` → rows of ``E (V, D)``; with ``mask_zero`` token 0 masks the step."""

    kind = "embedding"

    def __init__(self, name: str, *, E: FloatArray, mask_zero: bool) -> None:
        super().__init__(name)
        self.E = E  # (V, D)
        self.mask_zero = mask_zero

    def output_spec(self, x: TensorSpec) -> TensorSpec:
        if x.dtype != "int64":
            raise self.refuse(f"needs token ids from a model input of shape (batch, time), got {x.describe()}")
        return TensorSpec((*x.shape, self.E.shape[1]), sequence=x.sequence)

    def apply(self, inputs: list[FloatArray]) -> FloatArray:
        ids = inputs[0]
        vocab = self.E.shape[0]
        bad = (ids < 0) | (ids >= vocab)
        if np.any(bad):
            raise InputError(
                f"token id {int(ids[bad][0])} is out of range for Embedding {self.name!r} "
                f"(vocabulary of {vocab}: ids 0..{vocab - 1})"
            )
        return np.asarray(self.E[ids], dtype=np.float32)  # (B, ..., D)

    def output_mask(self, inputs: list[FloatArray], mask: BoolArray | None) -> BoolArray | None:
        return inputs[0] != 0 if self.mask_zero else None

    def params(self) -> dict[str, FloatArray]:
        return {"E": self.E}

    def config(self) -> dict[str, Any]:
        return {"mask_zero": self.mask_zero}


class Activation(StatelessLayer):
    """An elementwise (or last-axis, for softmax-like) activation by Keras name."""

    kind = "activation"

    def __init__(self, name: str, *, activation: str, keras_major: int = 3) -> None:
        super().__init__(name)
        self.activation_name = activation
        self.keras_major = keras_major
        self.act = activations.get(activation, keras_major)

    def output_spec(self, x: TensorSpec) -> TensorSpec:
        float_input(self, x)
        if self.activation_name == "glu":
            if not x.shape or x.shape[-1] % 2:
                raise self.refuse(f"glu needs an even last axis, input is {x.describe()}")
            return TensorSpec((*x.shape[:-1], x.shape[-1] // 2), sequence=x.sequence)
        return x

    def apply(self, inputs: list[FloatArray]) -> FloatArray:
        return self.act(inputs[0])

    def config(self) -> dict[str, Any]:
        return {"activation": self.activation_name, "keras_major": self.keras_major}


class ReLU(StatelessLayer):
    """Keras' ReLU layer: ``max_value`` cap, ``negative_slope`` below ``threshold``."""

    kind = "relu"

    def __init__(
        self, name: str, *, max_value: float | None, negative_slope: float, threshold: float
    ) -> None:
        super().__init__(name)
        self.max_value = max_value
        self.negative_slope = negative_slope
        self.threshold = threshold

    def output_spec(self, x: TensorSpec) -> TensorSpec:
        float_input(self, x)
        return x

    def apply(self, inputs: list[FloatArray]) -> FloatArray:
        x = inputs[0]
        y = np.where(x >= self.threshold, x, np.float32(self.negative_slope) * (x - np.float32(self.threshold)))
        if self.max_value is not None:
            y = np.minimum(y, np.float32(self.max_value))
        return y.astype(np.float32, copy=False)

    def config(self) -> dict[str, Any]:
        return {"max_value": self.max_value, "negative_slope": self.negative_slope, "threshold": self.threshold}


class Identity(StatelessLayer):
    """Dropout, SpatialDropout1D, GaussianNoise, GaussianDropout and friends: identity at inference."""

    kind = "identity"

    def apply(self, inputs: list[FloatArray]) -> FloatArray:
        return inputs[0]
