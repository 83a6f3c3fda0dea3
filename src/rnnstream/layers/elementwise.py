"""Elementwise layers the Keras importer never needed: activations with parameters, arithmetic with a constant.

ONNX lets a recurrent operator (and a few standalone operators) use activations with parameters:
``LeakyRelu(alpha)``, ``HardSigmoid(alpha, beta)``, ``ScaledTanh(alpha, beta)``, ... rnnstream names
such an activation with its parameters, ``"leaky_relu(alpha=0.01)"``, so the name alone says what it
computes: it is what a layer's ``config()`` and the model fingerprint see. :func:`get` resolves both
these names and every plain Keras name of :mod:`rnnstream.layers.activations`.

Definitions follow ONNX Runtime (``rnn_activation_functors.h``), which is what these models were
checked against: ``affine = αx + β``, ``leaky_relu = x if x ≥ 0 else αx``, ``thresholded_relu = x if
x > α else 0``, ``scaled_tanh = α·tanh(βx)``, ``hard_sigmoid = clip(αx + β, 0, 1)``, ``elu = x if
x ≥ 0 else α(eˣ − 1)``.

>>> import numpy as np
>>> name = parametric_name("leaky_relu", alpha=0.5)
>>> name, get(name)(np.float32([-2.0, 3.0]))
('leaky_relu(alpha=0.5)', array([-1.,  3.], dtype=float32))
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np

from rnnstream.errors import UnsupportedLayerError
from rnnstream.layers import activations
from rnnstream.layers.activations import Activation
from rnnstream.layers.layer import StatelessLayer, TensorSpec, float_input
from rnnstream.types import FloatArray

Formula = Callable[[FloatArray, np.float32, np.float32], FloatArray]


def _affine(x: FloatArray, a: np.float32, b: np.float32) -> FloatArray:
    return a * x + b


def _leaky_relu(x: FloatArray, a: np.float32, b: np.float32) -> FloatArray:
    return np.where(x >= 0, x, a * x)


def _thresholded_relu(x: FloatArray, a: np.float32, b: np.float32) -> FloatArray:
    return np.where(x > a, x, np.float32(0))


def _scaled_tanh(x: FloatArray, a: np.float32, b: np.float32) -> FloatArray:
    return np.asarray(a * np.tanh(b * x))


def _hard_sigmoid(x: FloatArray, a: np.float32, b: np.float32) -> FloatArray:
    return np.asarray(np.clip(a * x + b, np.float32(0), np.float32(1)))


def _elu(x: FloatArray, a: np.float32, b: np.float32) -> FloatArray:
    return np.where(x >= 0, x, a * np.expm1(np.minimum(x, np.float32(0))))


PARAMETRIC: dict[str, tuple[tuple[str, ...], Formula]] = {
    "affine": (("alpha", "beta"), _affine),
    "leaky_relu": (("alpha",), _leaky_relu),
    "thresholded_relu": (("alpha",), _thresholded_relu),
    "scaled_tanh": (("alpha", "beta"), _scaled_tanh),
    "hard_sigmoid": (("alpha", "beta"), _hard_sigmoid),
    "elu": (("alpha",), _elu),
}
"""Activation kind → (its parameters, in order; its formula)."""

_NAME = re.compile(r"^([a-z_]+)\((.*)\)$")


def parametric_name(kind: str, **params: float) -> str:
    """The canonical name of activation ``kind`` with ``params`` (float32 values, written exactly).

    >>> parametric_name("hard_sigmoid", alpha=0.2, beta=0.5)
    'hard_sigmoid(alpha=0.20000000298023224, beta=0.5)'
    """
    names, _ = PARAMETRIC[kind]
    if sorted(params) != sorted(names):
        raise UnsupportedLayerError(f"activation {kind!r} takes parameters {names}, got {sorted(params)}")
    values = ", ".join(f"{p}={float(np.float32(params[p]))!r}" for p in names)
    return f"{kind}({values})"


def parse(name: str) -> tuple[str, dict[str, float]] | None:
    """``("leaky_relu", {"alpha": 0.01})`` for a parametric name, None for a plain one."""
    match = _NAME.match(name)
    if match is None:
        return None
    kind, body = match.group(1), match.group(2)
    if kind not in PARAMETRIC:
        raise UnsupportedLayerError(f"unknown activation {name!r}; activations with parameters: {sorted(PARAMETRIC)}")
    params: dict[str, float] = {}
    for item in filter(None, (p.strip() for p in body.split(","))):
        key, _, value = item.partition("=")
        try:
            params[key.strip()] = float(value)
        except ValueError:
            raise UnsupportedLayerError(f"activation {name!r}: parameter {item!r} is not 'name=number'") from None
    if sorted(params) != sorted(PARAMETRIC[kind][0]):
        raise UnsupportedLayerError(f"activation {name!r} needs parameters {PARAMETRIC[kind][0]}")
    return kind, params


def get(name: str, keras_major: int = 3) -> Activation:
    """The activation called ``name``: a parametric name, or any name :func:`activations.get` knows.

    >>> import numpy as np
    >>> get("scaled_tanh(alpha=2.0, beta=1.0)")(np.float32([0.5])).round(4)
    array([0.9242], dtype=float32)
    """
    parsed = parse(name)
    if parsed is None:
        return activations.get(name, keras_major)
    kind, params = parsed
    names, formula = PARAMETRIC[kind]
    a = np.float32(params.get(names[0], 0.0))
    b = np.float32(params.get(names[1], 0.0)) if len(names) > 1 else np.float32(0)

    def act(x: FloatArray) -> FloatArray:
        return np.asarray(formula(x, a, b), dtype=np.float32)

    return act


class ParametricActivation(StatelessLayer):
    """An elementwise activation with parameters, e.g. ``elu(alpha=0.5)`` (see :func:`parametric_name`)."""

    kind = "parametric_activation"

    def __init__(self, name: str, *, activation: str) -> None:
        super().__init__(name)
        if parse(activation) is None:
            raise self.refuse(f"{activation!r} is not an activation with parameters; use the Activation layer")
        self.activation_name = activation
        self.act = get(activation)

    def output_spec(self, x: TensorSpec) -> TensorSpec:
        float_input(self, x)
        return x

    def apply(self, inputs: list[FloatArray]) -> FloatArray:
        return self.act(inputs[0])

    def config(self) -> dict[str, Any]:
        return {"activation": self.activation_name}


OPS = ("add", "sub", "rsub", "mul", "div", "rdiv")
"""``x + c``, ``x - c``, ``c - x``, ``x · c``, ``x / c``, ``c / x``."""


class ConstantOp(StatelessLayer):
    """Arithmetic of a tensor with a constant that broadcasts over its feature axes: ``x + c``, ``c / x``, ...

    Computed exactly as written (``x / c`` is a division, not a product with ``1 / c``), so it rounds
    like the framework's own operator.
    """

    kind = "constant_op"

    def __init__(self, name: str, *, op: str, constant: FloatArray) -> None:
        super().__init__(name)
        if op not in OPS:
            raise self.refuse(f"unknown operation {op!r}; known: {', '.join(OPS)}")
        self.op = op
        self.constant = np.ascontiguousarray(constant, dtype=np.float32)

    def output_spec(self, x: TensorSpec) -> TensorSpec:
        float_input(self, x)
        try:
            fits = np.broadcast_shapes(x.shape, self.constant.shape) == x.shape
        except ValueError:
            fits = False
        if not fits:
            raise self.refuse(
                f"the constant of shape {self.constant.shape} does not broadcast over the features of {x.describe()}"
            )
        return x

    def apply(self, inputs: list[FloatArray]) -> FloatArray:
        x, c = inputs[0], self.constant
        y = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide}
        if self.op in y:
            return np.asarray(y[self.op](x, c), dtype=np.float32)
        return np.asarray(c - x if self.op == "rsub" else c / x, dtype=np.float32)

    def params(self) -> dict[str, FloatArray]:
        return {"constant": self.constant}

    def config(self) -> dict[str, Any]:
        return {"op": self.op}
