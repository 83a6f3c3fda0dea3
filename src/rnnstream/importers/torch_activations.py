"""PyTorch activations (modules' and functions') → canonical layers, and dropout, which is identity at inference.

Names follow :mod:`rnnstream.layers.activations` (Keras names; ``hard_sigmoid`` is PyTorch's
``relu6(x + 3) / 6``, Keras 3's); an ``ELU`` with ``alpha != 1`` is a parametric activation. An
activation whose parameters have no exact counterpart is refused by name.

>>> from torch.nn import functional
>>> functional.gelu in ACTIVATIONS and "tanh" in ACTIVATION_METHODS
True
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional as nnf

from rnnstream.importers.axes import Tensor
from rnnstream.importers.torch_call import Call, Handler
from rnnstream.layers.dense import Activation, ReLU
from rnnstream.layers.elementwise import ParametricActivation, parametric_name
from rnnstream.layers.layer import Layer


def activation(call: Call, x: Tensor, name: str) -> Tensor:
    """``x`` through the Keras-named (or parametric) activation ``name``."""
    layer: Layer
    if name.endswith(")"):
        layer = ParametricActivation(call.layer_name(), activation=name)
    else:
        layer = Activation(call.layer_name(), activation=name, keras_major=3)  # hard_sigmoid: relu6(x + 3) / 6
    (y,) = call.add(layer, [x])
    return Tensor(y, x.axes)


def leaky_relu(call: Call, x: Tensor, slope: float) -> Tensor:
    (y,) = call.add(ReLU(call.layer_name(), max_value=None, negative_slope=float(slope), threshold=0.0), [x])
    return Tensor(y, x.axes)


def elu_name(alpha: float) -> str:
    return "elu" if alpha == 1.0 else parametric_name("elu", alpha=alpha)


def softmax(call: Call, x: Tensor, dim: Any, name: str) -> Tensor:
    if dim is None or x.feature_axis(int(dim)) != -1:
        raise call.refuse(f"{name} over dim={dim} of {x.describe()}: only the last (feature) axis can stream")
    return activation(call, x, name)


def _unary(name: str) -> Handler:
    return lambda call: activation(call, call.tensor(call.args[0]), name)


def _gelu(call: Call) -> Tensor:
    if call.arg(1, "approximate", "none") != "none":
        raise call.refuse("gelu(approximate='tanh') is not supported; use the exact gelu")
    return activation(call, call.tensor(call.args[0]), "gelu")


def _softplus(call: Call) -> Tensor:
    if float(call.arg(1, "beta", 1.0)) != 1.0:
        raise call.refuse("softplus with beta != 1 is not supported")
    return activation(call, call.tensor(call.args[0]), "softplus")


def _hardtanh(call: Call) -> Tensor:
    if (float(call.arg(1, "min_val", -1.0)), float(call.arg(2, "max_val", 1.0))) != (-1.0, 1.0):
        raise call.refuse("hardtanh with bounds other than (-1, 1) is not supported")
    return activation(call, call.tensor(call.args[0]), "hard_tanh")


def _with_param(name: str, param: str, position: int, default: float) -> Handler:
    """An activation whose parameter must keep its default (celu alpha, softshrink lambd, ...)."""

    def handle(call: Call) -> Tensor:
        if float(call.arg(position, param, default)) != default:
            raise call.refuse(f"{name} with {param} != {default} is not supported")
        return activation(call, call.tensor(call.args[0]), name)

    return handle


def _elu(call: Call) -> Tensor:
    return activation(call, call.tensor(call.args[0]), elu_name(float(call.arg(1, "alpha", 1.0))))


def _leaky_relu(call: Call) -> Tensor:
    return leaky_relu(call, call.tensor(call.args[0]), call.arg(1, "negative_slope", 0.01))


def _softmax(name: str) -> Handler:
    return lambda call: softmax(call, call.tensor(call.args[0]), call.arg(1, "dim"), name)


def _dropout(training_default: bool) -> Handler:
    def handle(call: Call) -> Any:
        if bool(call.arg(2, "training", training_default)):
            raise call.refuse("dropout with training=True is random at inference; pass training=self.training")
        return call.args[0]

    return handle


ACTIVATIONS: dict[Any, Handler] = {
    torch.relu: _unary("relu"), nnf.relu: _unary("relu"), torch.tanh: _unary("tanh"), nnf.tanh: _unary("tanh"),
    torch.sigmoid: _unary("sigmoid"), nnf.sigmoid: _unary("sigmoid"), nnf.gelu: _gelu, nnf.silu: _unary("silu"),
    nnf.mish: _unary("mish"), nnf.softsign: _unary("softsign"), nnf.softplus: _softplus,
    torch.selu: _unary("selu"), nnf.selu: _unary("selu"), nnf.relu6: _unary("relu6"),
    nnf.hardsigmoid: _unary("hard_sigmoid"), nnf.hardswish: _unary("hard_silu"), nnf.hardtanh: _hardtanh,
    nnf.logsigmoid: _unary("log_sigmoid"), nnf.tanhshrink: _unary("tanh_shrink"),
    nnf.celu: _with_param("celu", "alpha", 1, 1.0), nnf.softshrink: _with_param("soft_shrink", "lambd", 1, 0.5),
    nnf.hardshrink: _with_param("hard_shrink", "lambd", 1, 0.5), nnf.elu: _elu, nnf.leaky_relu: _leaky_relu,
    nnf.softmax: _softmax("softmax"), torch.softmax: _softmax("softmax"),
    nnf.log_softmax: _softmax("log_softmax"), torch.log_softmax: _softmax("log_softmax"),
    nnf.dropout: _dropout(True), nnf.alpha_dropout: _dropout(False), nnf.dropout1d: _dropout(True),
}  # fmt: skip
"""Activation and dropout functions of a traced forward → handler."""

ACTIVATION_METHODS: dict[str, Handler] = {
    "relu": _unary("relu"), "tanh": _unary("tanh"), "sigmoid": _unary("sigmoid"),
    "softmax": _softmax("softmax"), "log_softmax": _softmax("log_softmax"),
}  # fmt: skip
