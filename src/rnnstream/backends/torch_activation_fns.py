"""Every activation of :mod:`rnnstream.layers.activations` (by the same Keras names) and of
:mod:`rnnstream.layers.elementwise` (ONNX's, with parameters: ``"leaky_relu(alpha=0.01)"``), in torch.

Each one follows the NumPy definition it mirrors, formula for formula (``gelu`` uses torch's exact
``erf`` where NumPy uses a 1.5e-7 approximation), so the torch backend agrees with the oracle to
float32 rounding. Every function is shape-preserving except ``glu`` (halves the last axis), and none
synchronises with the host, so all of them can be captured in a CUDA graph.

>>> import torch
>>> get("hard_sigmoid", keras_major=2)(torch.tensor([1.0]))
tensor([0.7000])
>>> get("hard_sigmoid", keras_major=3)(torch.tensor([1.0]))
tensor([0.6667])
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from rnnstream.errors import UnsupportedLayerError
from rnnstream.layers import elementwise
from rnnstream.layers.activations import SELU_ALPHA, SELU_SCALE

TorchActivation = Callable[[Tensor], Tensor]

NOT_ELEMENTWISE = frozenset({"softmax", "log_softmax", "sparsemax", "glu"})
"""Activations over the last axis: applied to one gate at a time, never to several side by side."""


def linear(x: Tensor) -> Tensor:
    return x


def relu6(x: Tensor) -> Tensor:
    return torch.clamp(x, 0.0, 6.0)


def leaky_relu(x: Tensor) -> Tensor:
    return torch.where(x >= 0, x, 0.2 * x)


def elu(x: Tensor) -> Tensor:
    return torch.where(x > 0, x, torch.expm1(torch.clamp_max(x, 0.0)))


def selu(x: Tensor) -> Tensor:
    return SELU_SCALE * torch.where(x > 0, x, SELU_ALPHA * torch.expm1(torch.clamp_max(x, 0.0)))


def celu(x: Tensor) -> Tensor:
    return torch.clamp_min(x, 0.0) + torch.expm1(torch.clamp_max(x, 0.0))


def softplus(x: Tensor) -> Tensor:
    """log(1 + e^x) = max(x, 0) + log1p(e^{-|x|}), as in NumPy (torch's own switches to x above 20)."""
    return torch.clamp_min(x, 0.0) + torch.log1p(torch.exp(-torch.abs(x)))


def softsign(x: Tensor) -> Tensor:
    return x / (1 + torch.abs(x))


def silu(x: Tensor) -> Tensor:
    return x * torch.sigmoid(x)


def mish(x: Tensor) -> Tensor:
    return x * torch.tanh(softplus(x))


def gelu(x: Tensor) -> Tensor:
    """Exact GELU, x/2 · (1 + erf(x/√2))."""
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def gelu_approximate(x: Tensor) -> Tensor:
    """GELU's tanh approximation, x/2 · (1 + tanh(√(2/π) · (x + 0.044715 x³)))."""
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x)))


def softmax(x: Tensor) -> Tensor:
    return torch.softmax(x, dim=-1)


def log_softmax(x: Tensor) -> Tensor:
    return torch.log_softmax(x, dim=-1)


def log_sigmoid(x: Tensor) -> Tensor:
    return -softplus(-x)


def hard_sigmoid_keras3(x: Tensor) -> Tensor:
    """Keras 3: relu6(x + 3) / 6."""
    return torch.clamp(x + 3.0, 0.0, 6.0) / 6.0


def hard_sigmoid_keras2(x: Tensor) -> Tensor:
    """Keras 2 / tf.keras: clip(0.2 x + 0.5, 0, 1)."""
    return torch.clamp(0.2 * x + 0.5, 0.0, 1.0)


def hard_silu(x: Tensor) -> Tensor:
    return x * hard_sigmoid_keras3(x)


def hard_tanh(x: Tensor) -> Tensor:
    return torch.clamp(x, -1.0, 1.0)


def tanh_shrink(x: Tensor) -> Tensor:
    return x - torch.tanh(x)


def soft_shrink(x: Tensor) -> Tensor:
    return torch.where(x > 0.5, x - 0.5, torch.where(x < -0.5, x + 0.5, 0.0))


def hard_shrink(x: Tensor) -> Tensor:
    return torch.where(torch.abs(x) > 0.5, x, 0.0)


def sparse_plus(x: Tensor) -> Tensor:
    return torch.where(x <= -1, 0.0, torch.where(x < 1, 0.25 * (x + 1) ** 2, x))


def sparse_sigmoid(x: Tensor) -> Tensor:
    return torch.where(x <= -1, 0.0, torch.where(x >= 1, 1.0, 0.5 * (x + 1)))


def squareplus(x: Tensor) -> Tensor:
    return (x + torch.sqrt(x * x + 4.0)) / 2


def glu(x: Tensor) -> Tensor:
    """a · σ(b) where [a, b] are the two halves of the last axis."""
    a, b = torch.chunk(x, 2, dim=-1)
    return a * torch.sigmoid(b)


def sparsemax(x: Tensor) -> Tensor:
    """Sparsemax over the last axis, the same steps as the NumPy version (which matches Keras')."""
    z = torch.sort(x, dim=-1, descending=True).values  # (..., F)
    cumsum = torch.cumsum(z, dim=-1)  # (..., F)
    r = torch.arange(1, x.shape[-1] + 1, dtype=x.dtype, device=x.device)  # (F,)
    support = z - (cumsum - 1) / r > 0  # (..., F)
    k = torch.sum(support, dim=-1, keepdim=True)  # (..., 1)
    tau = (torch.sum(torch.where(support, cumsum, 0.0), dim=-1, keepdim=True) - 1) / k  # (..., 1)
    return torch.clamp_min(x - tau, 0.0)


_BY_NAME: dict[str, TorchActivation] = {
    "linear": linear,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "relu": torch.relu,
    "elu": elu,
    "selu": selu,
    "softplus": softplus,
    "softsign": softsign,
    "swish": silu,
    "silu": silu,
    "mish": mish,
    "gelu": gelu,
    "gelu_approximate": gelu_approximate,
    "exponential": torch.exp,
    "softmax": softmax,
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


_PARAMETRIC: dict[str, Callable[[Tensor, float, float], Tensor]] = {
    "affine": lambda x, a, b: a * x + b,
    "leaky_relu": lambda x, a, b: torch.where(x >= 0, x, a * x),
    "thresholded_relu": lambda x, a, b: torch.where(x > a, x, 0.0),
    "scaled_tanh": lambda x, a, b: a * torch.tanh(b * x),
    "hard_sigmoid": lambda x, a, b: torch.clamp(a * x + b, 0.0, 1.0),
    "elu": lambda x, a, b: torch.where(x >= 0, x, a * torch.expm1(torch.clamp_max(x, 0.0))),
}
"""``elementwise.PARAMETRIC``'s formulas: ``x`` and the parameters α, β (float32 values)."""


def get(name: str | None, keras_major: int = 3) -> TorchActivation | None:
    """The torch version of the activation ``name`` (as :func:`rnnstream.layers.elementwise.get` reads
    it for a Keras ``keras_major`` file), or None when there is none: the caller then keeps the
    layer's NumPy step.

    >>> import torch
    >>> get("relu")(torch.tensor([-1.0, 2.0]))
    tensor([0., 2.])
    >>> get("scaled_tanh(alpha=2.0, beta=1.0)")(torch.tensor([0.5]))
    tensor([0.9242])
    >>> get("my_activation") is None
    True
    """
    if name is None:
        return linear
    if name == "hard_sigmoid":
        return hard_sigmoid_keras2 if keras_major < 3 else hard_sigmoid_keras3
    try:
        parsed = elementwise.parse(name)
    except UnsupportedLayerError:
        return None
    if parsed is None:
        return _BY_NAME.get(name)
    kind, params = parsed
    formula = _PARAMETRIC.get(kind)
    if formula is None:
        return None
    names = elementwise.PARAMETRIC[kind][0]
    # α, β rounded to float32 first, as the NumPy version holds them
    a, b = (float(np.float32(params[names[k]])) if k < len(names) else 0.0 for k in (0, 1))
    return lambda x: formula(x, a, b)
