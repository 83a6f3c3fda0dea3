"""Causal 1-D convolution, streamed: the state is the last ``(k - 1)·d`` inputs.

With ``padding="causal"`` Keras left-pads ``(k - 1)·d`` zeros, so the output at time t is

    y_t = act(b + Σ_j x_{t - (k-1-j)·d} K_j)        for j = 0 … k-1

and a stream only needs its last ``(k - 1)·d`` inputs (zeros at the start) to compute the next output.

>>> import numpy as np
>>> conv = CausalConv1D("c", K=np.ones((2, 1, 1), np.float32), b=None, dilation=1, activation="linear")
>>> s = conv.initial_state(1)
>>> for x in (1.0, 2.0, 3.0):
...     out = conv.step([np.float32([[x]])], None, s)
...     s = out.state
...     print(out.outputs[0][0, 0])
1.0
3.0
5.0
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rnnstream.layers import activations
from rnnstream.layers.layer import Layer, StepResult, TensorSpec, last_dim
from rnnstream.types import BoolArray, FloatArray


class CausalConv1D(Layer):
    """Conv1D with ``padding="causal"``, stride 1, any kernel size and dilation."""

    kind = "causal_conv1d"

    def __init__(
        self,
        name: str,
        *,
        K: FloatArray,
        b: FloatArray | None,
        dilation: int,
        activation: str,
        keras_major: int = 3,
    ) -> None:
        super().__init__(name)
        self.K = K  # (k, I, O)
        self.b = b  # (O,) or None
        self.dilation = dilation
        self.activation_name = activation
        self.keras_major = keras_major
        self.act = activations.get(activation, keras_major)
        self.kernel_size, self.in_features, self.out_features = K.shape
        self.history = (self.kernel_size - 1) * dilation  # past inputs each stream keeps

    @property
    def state_parts(self) -> list[tuple[str, int]]:
        return [("past_inputs", self.history * self.in_features)] if self.history else []

    def output_specs(self, inputs: list[TensorSpec]) -> list[TensorSpec]:
        if len(inputs) != 1:
            raise self.refuse(f"takes one input, got {len(inputs)}")
        (x,) = inputs
        features = last_dim(self, x)
        if len(x.shape) != 1 or not x.sequence:
            raise self.refuse(f"expects a (batch, time, features) sequence, got {x.describe()}")
        if features != self.in_features:
            raise self.refuse(f"kernel expects {self.in_features} input features, input has {features}")
        return [TensorSpec((self.out_features,))]

    def step(self, inputs: list[FloatArray], mask: BoolArray | None, state: FloatArray) -> StepResult:
        x = inputs[0]  # (B, I)
        B = x.shape[0]
        past = state.reshape(B, self.history, self.in_features)  # (B, (k-1)d, I), oldest first
        window = np.concatenate([past, x[:, None, :]], axis=1)  # (B, (k-1)d + 1, I)
        taps = window[:, :: self.dilation]  # (B, k, I): x_{t-(k-1)d}, …, x_{t-d}, x_t
        y = np.einsum("bki,kio->bo", taps, self.K)  # (B, O)
        if self.b is not None:
            y = y + self.b
        # Keras' Conv1D does not support masking: the mask stops here (Keras 3 warns and drops it).
        new_past = window[:, 1:].reshape(B, self.history * self.in_features)
        return StepResult([self.act(y.astype(np.float32, copy=False))], None, new_past)

    def params(self) -> dict[str, FloatArray]:
        return {"K": self.K} if self.b is None else {"K": self.K, "b": self.b}

    def config(self) -> dict[str, Any]:
        return {"dilation": self.dilation, "activation": self.activation_name, "keras_major": self.keras_major}
