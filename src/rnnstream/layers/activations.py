"""Every built-in Keras activation, in NumPy, by its Keras name (and ``gelu_approximate``, the form of
``gelu`` that ``keras.ops.gelu`` computes by default).

Definitions follow ``keras/src/activations/activations.py`` and the TensorFlow backend ops they call.
``hard_sigmoid`` is the one whose meaning changed: Keras 2 used ``clip(0.2 x + 0.5, 0, 1)``,
Keras 3 uses ``relu6(x + 3) / 6``; :func:`get` picks by the major version of the file's writer.

>>> import numpy as np
>>> get("hard_sigmoid", keras_major=2)(np.float32([1.0]))
array([0.7], dtype=float32)
>>> get("hard_sigmoid", keras_major=3)(np.float32([1.0]))
array([0.6666667], dtype=float32)
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from rnnstream.errors import UnsupportedLayerError
from rnnstream.types import Array, FloatArray

Activation = Callable[[FloatArray], FloatArray]

# SELU's α and λ (Klambauer et al. 2017); the torch backend uses the same constants.
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


def _f32(x: Array | float) -> FloatArray:
    return np.asarray(x, dtype=np.float32)


def linear(x: FloatArray) -> FloatArray:
    return x


def sigmoid(x: FloatArray) -> FloatArray:
    """σ(x) = 1 / (1 + e^{-x}), computed without overflow for large |x|."""
    e = np.exp(-np.abs(x))  # in (0, 1]
    return _f32(np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)))


def tanh(x: FloatArray) -> FloatArray:
    return np.tanh(x)


def relu(x: FloatArray) -> FloatArray:
    return np.maximum(x, np.float32(0))


def relu6(x: FloatArray) -> FloatArray:
    return np.clip(x, np.float32(0), np.float32(6))


def leaky_relu(x: FloatArray) -> FloatArray:
    return _f32(np.where(x >= 0, x, np.float32(0.2) * x))


def elu(x: FloatArray) -> FloatArray:
    return _f32(np.where(x > 0, x, np.expm1(np.minimum(x, 0))))


def selu(x: FloatArray) -> FloatArray:
    return _f32(SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * np.expm1(np.minimum(x, 0))))


def celu(x: FloatArray) -> FloatArray:
    return _f32(np.maximum(x, 0) + np.expm1(np.minimum(x, 0)))


def softplus(x: FloatArray) -> FloatArray:
    """log(1 + e^x), stable: max(x, 0) + log1p(e^{-|x|})."""
    return _f32(np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x))))


def softsign(x: FloatArray) -> FloatArray:
    return _f32(x / (1 + np.abs(x)))


def silu(x: FloatArray) -> FloatArray:
    return _f32(x * sigmoid(x))


def mish(x: FloatArray) -> FloatArray:
    return _f32(x * np.tanh(softplus(x)))


def exponential(x: FloatArray) -> FloatArray:
    return np.exp(x)


def _erf(x: FloatArray) -> FloatArray:
    """erf(x) by Abramowitz & Stegun 7.1.26: absolute error below 1.5e-7, under float32's resolution near 1."""
    z = np.asarray(x, dtype=np.float64)
    a = np.abs(z)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    y = 1.0 - poly * np.exp(-a * a)
    y = np.minimum(y, 1.0)
    return _f32(np.sign(z) * y)


def gelu(x: FloatArray) -> FloatArray:
    """Exact GELU, x·Φ(x) = x/2 · (1 + erf(x/√2)) — Keras' default (``approximate=False``)."""
    return _f32(0.5 * x * (1.0 + _erf(x / np.float32(np.sqrt(2.0)))))


def gelu_approximate(x: FloatArray) -> FloatArray:
    """GELU's tanh approximation, x/2 · (1 + tanh(√(2/π) · (x + 0.044715 x³))): ``keras.ops.gelu``'s default
    (``approximate=True``), ``tf.nn.gelu(approximate=True)``. Not a Keras activation name: Keras' ``"gelu"``
    is exact."""
    inner = np.float32(np.sqrt(2.0 / np.pi)) * (x + np.float32(0.044715) * x * x * x)  # (B, ...)
    return _f32(np.float32(0.5) * x * (np.float32(1) + np.tanh(inner)))


def softmax(x: FloatArray) -> FloatArray:
    """Softmax over the last axis, shifted by the max for stability."""
    e = np.exp(x - np.max(x, axis=-1, keepdims=True))
    return _f32(e / np.sum(e, axis=-1, keepdims=True))


def log_softmax(x: FloatArray) -> FloatArray:
    shifted = x - np.max(x, axis=-1, keepdims=True)
    return _f32(shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True)))


def log_sigmoid(x: FloatArray) -> FloatArray:
    return _f32(-softplus(-x))


def hard_sigmoid_keras3(x: FloatArray) -> FloatArray:
    """Keras 3: relu6(x + 3) / 6 = clip(x/6 + 1/2, 0, 1)."""
    return _f32(relu6(x + np.float32(3)) / np.float32(6))


def hard_sigmoid_keras2(x: FloatArray) -> FloatArray:
    """Keras 2 / tf.keras: clip(0.2 x + 0.5, 0, 1)."""
    return _f32(np.clip(np.float32(0.2) * x + np.float32(0.5), np.float32(0), np.float32(1)))


def hard_silu(x: FloatArray) -> FloatArray:
    return _f32(x * hard_sigmoid_keras3(x))


def hard_tanh(x: FloatArray) -> FloatArray:
    return np.clip(x, np.float32(-1), np.float32(1))


def tanh_shrink(x: FloatArray) -> FloatArray:
    return _f32(x - np.tanh(x))


def soft_shrink(x: FloatArray) -> FloatArray:
    return _f32(np.where(x > 0.5, x - 0.5, np.where(x < -0.5, x + 0.5, 0)))


def hard_shrink(x: FloatArray) -> FloatArray:
    return _f32(np.where(np.abs(x) > 0.5, x, 0))


def sparse_plus(x: FloatArray) -> FloatArray:
    return _f32(np.where(x <= -1, 0, np.where(x < 1, 0.25 * (x + 1) ** 2, x)))


def sparse_sigmoid(x: FloatArray) -> FloatArray:
    return _f32(np.where(x <= -1, 0, np.where(x >= 1, 1, 0.5 * (x + 1))))


def squareplus(x: FloatArray) -> FloatArray:
    return _f32((x + np.sqrt(x * x + np.float32(4))) / 2)


def glu(x: FloatArray) -> FloatArray:
    """Gated linear unit over the last axis: a · σ(b) where [a, b] are the two halves."""
    a, b = np.split(x, 2, axis=-1)
    return _f32(a * sigmoid(b))


def sparsemax(x: FloatArray) -> FloatArray:
    """Sparsemax over the last axis (Martins & Astudillo, 2016)."""
    z = np.sort(x, axis=-1)[..., ::-1]  # descending
    cumsum = np.cumsum(z, axis=-1)
    r = np.arange(1, x.shape[-1] + 1, dtype=np.float32)
    support = z - (cumsum - 1) / r > 0
    k = np.sum(support, axis=-1, keepdims=True)
    tau = (np.sum(np.where(support, cumsum, 0), axis=-1, keepdims=True) - 1) / k
    return _f32(np.maximum(x - tau, 0))


_COMMON: dict[str, Activation] = {
    "linear": linear,
    "sigmoid": sigmoid,
    "tanh": tanh,
    "relu": relu,
    "elu": elu,
    "selu": selu,
    "softplus": softplus,
    "softsign": softsign,
    "swish": silu,
    "silu": silu,
    "mish": mish,
    "gelu": gelu,
    "exponential": exponential,
    "softmax": softmax,
}

_KERAS3_ONLY: dict[str, Activation] = {
    "relu6": relu6,
    "leaky_relu": leaky_relu,
    "celu": celu,
    "log_softmax": log_softmax,
    "log_sigmoid": log_sigmoid,
    "hard_silu": hard_silu,
    "hard_swish": hard_silu,
    "hard_tanh": hard_tanh,
    "tanh_shrink": tanh_shrink,
    "soft_shrink": soft_shrink,
    "hard_shrink": hard_shrink,
    "sparse_plus": sparse_plus,
    "sparse_sigmoid": sparse_sigmoid,
    "squareplus": squareplus,
    "glu": glu,
    "sparsemax": sparsemax,
}

_APPROXIMATIONS: dict[str, Activation] = {
    "gelu_approximate": gelu_approximate,
}
"""Forms of Keras activations that ``keras.ops`` / TensorFlow compute under an option, by rnnstream's name."""

NAMES: tuple[str, ...] = tuple(sorted({*_COMMON, *_KERAS3_ONLY, *_APPROXIMATIONS, "hard_sigmoid"}))
"""Every activation name :func:`get` knows."""


def get(name: str | None, keras_major: int = 3) -> Activation:
    """Return the activation called ``name`` in a file written by Keras ``keras_major``.

    >>> import numpy as np
    >>> get("relu")(np.float32([-1.0, 2.0]))
    array([0., 2.], dtype=float32)
    """
    if name is None:
        return linear
    if name == "hard_sigmoid":
        return hard_sigmoid_keras2 if keras_major < 3 else hard_sigmoid_keras3
    found = _COMMON.get(name) or _KERAS3_ONLY.get(name) or _APPROXIMATIONS.get(name)
    if found is None:
        raise UnsupportedLayerError(
            f"unknown activation {name!r}; rnnstream knows {', '.join(NAMES)}. "
            "Custom activations are code, which rnnstream never loads from a file: "
            "replace it with a built-in one and re-save the model."
        )
    return found
