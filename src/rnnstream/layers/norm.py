"""Normalisation over the feature axis: LayerNormalization, BatchNormalization (inference), Normalization.

All three act on the last axis of one step, so they stream with no state.

>>> import numpy as np
>>> norm = Normalization("n", mean=np.float32([1.0]), variance=np.float32([4.0]), invert=False)
>>> norm.apply([np.float32([[5.0]])])
array([[2.]], dtype=float32)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rnnstream.layers.layer import StatelessLayer, TensorSpec, last_dim
from rnnstream.types import FloatArray

KERAS_EPSILON = 1e-7
"""``keras.backend.epsilon()``, the floor Normalization puts under the standard deviation."""


def _check_features(layer: StatelessLayer, x: TensorSpec, *vectors: FloatArray | None) -> TensorSpec:
    features = last_dim(layer, x)
    for v in vectors:
        if v is not None and v.size != 1 and v.shape[-1] != features:
            raise layer.refuse(f"weights have {v.shape[-1]} features, input has {features}")
    return x


class LayerNorm(StatelessLayer):
    """``y = (x - mean) / sqrt(var + eps) · gamma + beta``, moments over the last axis (biased variance).

    With Keras' ``rms_scaling=True``: ``y = x / sqrt(var + eps) · gamma`` (no centring, as Keras does).
    """

    kind = "layer_norm"

    def __init__(
        self,
        name: str,
        *,
        gamma: FloatArray | None,
        beta: FloatArray | None,
        epsilon: float,
        rms_scaling: bool = False,
    ) -> None:
        super().__init__(name)
        self.gamma, self.beta, self.epsilon, self.rms_scaling = gamma, beta, epsilon, rms_scaling

    def output_spec(self, x: TensorSpec) -> TensorSpec:
        return _check_features(self, x, self.gamma, self.beta)

    def apply(self, inputs: list[FloatArray]) -> FloatArray:
        x = inputs[0]
        mean = np.mean(x, axis=-1, keepdims=True)  # (B, 1)
        var = np.mean(np.square(x - mean), axis=-1, keepdims=True)  # (B, 1)
        inv = 1.0 / np.sqrt(var + np.float32(self.epsilon))
        y = x * inv if self.rms_scaling else (x - mean) * inv
        if self.gamma is not None:
            y = y * self.gamma
        if self.beta is not None and not self.rms_scaling:
            y = y + self.beta
        return np.asarray(y, dtype=np.float32)

    def params(self) -> dict[str, FloatArray]:
        return {k: v for k, v in (("gamma", self.gamma), ("beta", self.beta)) if v is not None}

    def config(self) -> dict[str, Any]:
        return {"epsilon": self.epsilon, "rms_scaling": self.rms_scaling}


class BatchNorm(StatelessLayer):
    """Inference batch norm: ``y = (x - moving_mean) / sqrt(moving_var + eps) · gamma + beta``."""

    kind = "batch_norm"

    def __init__(
        self,
        name: str,
        *,
        gamma: FloatArray | None,
        beta: FloatArray | None,
        mean: FloatArray,
        variance: FloatArray,
        epsilon: float,
    ) -> None:
        super().__init__(name)
        self.gamma, self.beta, self.mean, self.variance, self.epsilon = gamma, beta, mean, variance, epsilon

    def output_spec(self, x: TensorSpec) -> TensorSpec:
        return _check_features(self, x, self.gamma, self.beta, self.mean, self.variance)

    def apply(self, inputs: list[FloatArray]) -> FloatArray:
        inv = 1.0 / np.sqrt(self.variance + np.float32(self.epsilon))  # (F,)
        if self.gamma is not None:
            inv = inv * self.gamma
        y = (inputs[0] - self.mean) * inv
        if self.beta is not None:
            y = y + self.beta
        return np.asarray(y, dtype=np.float32)

    def params(self) -> dict[str, FloatArray]:
        named = (("gamma", self.gamma), ("beta", self.beta), ("mean", self.mean), ("variance", self.variance))
        return {k: v for k, v in named if v is not None}

    def config(self) -> dict[str, Any]:
        return {"epsilon": self.epsilon}


class Normalization(StatelessLayer):
    """Keras' preprocessing Normalization: ``(x - mean) / max(sqrt(var), eps)``; ``invert`` undoes it."""

    kind = "normalization"

    def __init__(self, name: str, *, mean: FloatArray, variance: FloatArray, invert: bool) -> None:
        super().__init__(name)
        self.mean, self.variance, self.invert = mean, variance, invert
        self.std = np.maximum(np.sqrt(variance), np.float32(KERAS_EPSILON)).astype(np.float32)

    def output_spec(self, x: TensorSpec) -> TensorSpec:
        return _check_features(self, x, self.mean, self.variance)

    def apply(self, inputs: list[FloatArray]) -> FloatArray:
        x = inputs[0]
        y = self.mean + x * self.std if self.invert else (x - self.mean) / self.std
        return np.asarray(y, dtype=np.float32)

    def params(self) -> dict[str, FloatArray]:
        return {"mean": self.mean, "variance": self.variance}

    def config(self) -> dict[str, Any]:
        return {"invert": self.invert}
