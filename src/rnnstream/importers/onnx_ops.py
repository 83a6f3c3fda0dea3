"""ONNX operators that compute: MatMul/Gemm (Dense), arithmetic, activations, LayerNormalization, embeddings.

Every operator is read through :data:`COMPUTE` (and :data:`~rnnstream.importers.onnx_layout.LAYOUT`
for the operators that only move axes or compute shapes); an operator on constants only is folded
with NumPy. A ``MatMul`` (or ``Gemm``) followed, as its only consumer, by a bias ``Add`` and a
``Relu``/``Tanh``/``Sigmoid`` becomes one Dense layer, which the fused kernel computes in one pass.

>>> sorted(k for k in COMPUTE if k.startswith("M"))
['MatMul', 'Mul']
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from rnnstream.errors import UnsupportedLayerError
from rnnstream.importers import causal_padding
from rnnstream.importers.axes import FEATURE, NodeContext, Shape, Stack, Tensor, Writer, Zeros
from rnnstream.importers.causal_padding import Unchomped
from rnnstream.layers.dense import Activation, Dense, Embedding, ReLU
from rnnstream.layers.elementwise import ConstantOp, ParametricActivation, parametric_name
from rnnstream.layers.layer import Layer
from rnnstream.layers.merge import Merge
from rnnstream.layers.norm import LayerNorm
from rnnstream.types import FloatArray


class Reader(Protocol):
    """What an operator may ask of the graph reader: who consumes a tensor, and to fold a node in."""

    def sole_consumer(self, name: str) -> Any: ...

    def constant(self, name: str) -> np.ndarray[Any, Any] | None: ...

    def fuse(self, node: Any, value: Any) -> None: ...


def pending_error(value: Any) -> UnsupportedLayerError | None:
    """Why a padded time axis or an unchomped ``Conv`` cannot be used as a tensor of the model (or None)."""
    extra = value.extra if isinstance(value, Unchomped) else 0
    return causal_padding.pending_error(value, conv="Conv", chomp=f"a Slice (ends -{extra}) on the time axis")


@dataclass
class Op(NodeContext):
    """One ONNX node with its inputs read (None for an absent optional input) and attributes decoded."""

    node: Any
    name: str
    writer: Writer
    inputs: list[Any]
    attrs: dict[str, Any]
    opset: int
    reader: Reader

    def message(self, why: str) -> str:
        return f"ONNX node {self.name!r} ({self.node.op_type}): {why}"

    def refuse(self, why: str) -> UnsupportedLayerError:
        return UnsupportedLayerError(self.message(why))

    def const(self, index: int, what: str) -> np.ndarray[Any, Any]:
        value = self.inputs[index] if index < len(self.inputs) else None
        if not isinstance(value, np.ndarray):
            raise self.refuse(f"{what} must be a constant (an initializer), but it is computed in the graph")
        return value

    def tensor(self, index: int) -> Tensor:
        value = self.inputs[index] if index < len(self.inputs) else None
        if isinstance(value, Tensor):
            return value
        pending = pending_error(value)
        if pending is not None:
            raise pending
        kinds = {Stack: "a stack of states", Zeros: "a tensor of zeros", Shape: "a shape", type(None): "absent"}
        kind = kinds.get(type(value), "a constant")
        raise self.refuse(f"input {index} is {kind}, where a tensor of the model is needed")

    def layer(self, layer: Layer, x: Tensor) -> list[Any]:
        """A per-step layer on ``x``; its output keeps ``x``'s axes."""
        (y,) = self.add(layer, [x])
        return [Tensor(y, x.axes)]


Handler = Callable[[Op], list[Any]]


def features_of(op: Op, x: Tensor, c: np.ndarray[Any, Any], what: str) -> FloatArray:
    """A constant that broadcasts against ``x`` in the framework, as one that broadcasts over its features."""
    if c.ndim > len(x.axes):
        raise op.refuse(f"{what} of shape {c.shape} has more axes than {x.describe()}")
    full = c.reshape((1,) * (len(x.axes) - c.ndim) + c.shape)
    if any(full.shape[i] != 1 for i, a in enumerate(x.axes) if a != FEATURE):
        raise op.refuse(f"{what} of shape {c.shape} varies along the batch, time or a unit axis of {x.describe()}")
    index = tuple(slice(None) if a == FEATURE else 0 for a in x.axes)
    return np.asarray(full[index], dtype=np.float32)


# -- Dense: MatMul, Gemm, and what folds into them -------------------------------------------------

_FOLDED_ACTIVATIONS = {"Relu": "relu", "Tanh": "tanh", "Sigmoid": "sigmoid"}


def _dense(op: Op, x: Tensor, W: FloatArray, b: FloatArray | None) -> list[Any]:
    if x.axes[-1] != FEATURE or op.writer.spec(x).shape[-1:] != (W.shape[0],):
        raise op.refuse(f"multiplies {x.describe()} (features {op.writer.spec(x).shape}) by a {W.shape} matrix")
    units = W.shape[1]
    out, nxt, folded = op.node.output[0], op.reader.sole_consumer(op.node.output[0]), []
    if b is None and nxt is not None and nxt.op_type == "Add":
        other = [n for n in nxt.input if n != out]
        c = op.reader.constant(other[0]) if len(other) == 1 else None
        if c is not None and c.size in (1, units) and c.shape[-1:] in ((1,), (units,)) and c.ndim <= len(x.axes):
            b = np.broadcast_to(c.reshape(-1), (units,)).astype(np.float32)
            folded.append(nxt)
            out, nxt = nxt.output[0], op.reader.sole_consumer(nxt.output[0])
    activation = "linear"
    if nxt is not None and nxt.op_type in _FOLDED_ACTIVATIONS:
        activation = _FOLDED_ACTIVATIONS[nxt.op_type]
        folded.append(nxt)
    (y,) = op.add(Dense(op.layer_name(), W=np.ascontiguousarray(W, np.float32), b=b, activation=activation), [x])
    value = Tensor(y, x.axes)
    for node in folded:
        op.reader.fuse(node, value)
    return [None if folded else value]  # a folded node's output is read only by the node it folded into


def _matmul(op: Op) -> list[Any]:
    a, b = op.inputs
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return [np.matmul(a, b)]
    W = op.const(1, "the second operand of MatMul (the weight)")
    if W.ndim != 2:
        raise op.refuse(f"the weight has shape {W.shape}; only a 2-D weight is read")
    return _dense(op, op.tensor(0), W, None)


def _gemm(op: Op) -> list[Any]:
    if op.attrs.get("transA", 0):
        raise op.refuse("transA=1 puts the features first; not supported")
    x = op.tensor(0)
    if len(x.axes) != 2:
        raise op.refuse(f"A is {x.describe()}; Gemm takes [B, F]")
    B = op.const(1, "B (the weight)")
    W = (B.T if op.attrs.get("transB", 0) else B).astype(np.float32)
    alpha, beta = float(op.attrs.get("alpha", 1.0)), float(op.attrs.get("beta", 1.0))
    W = W if alpha == 1.0 else W * np.float32(alpha)
    bias = None
    if len(op.inputs) > 2 and op.inputs[2] is not None:
        C = op.const(2, "C (the bias)")
        if C.size not in (1, W.shape[1]) or C.ndim > 2 or (C.ndim == 2 and C.shape[0] != 1):
            raise op.refuse(f"C has shape {C.shape}; only a bias of shape ({W.shape[1]},) or (1, {W.shape[1]}) is read")
        bias = np.broadcast_to(C.reshape(-1), (W.shape[1],)).astype(np.float32)
        bias = bias if beta == 1.0 else bias * np.float32(beta)
    return _dense(op, x, W, bias)


def _embedding(op: Op) -> list[Any]:
    E, ids = op.const(0, "the embedding table"), op.tensor(1)
    if op.attrs.get("axis", 0) != 0 or E.ndim != 2:
        raise op.refuse(f"a Gather of token ids takes rows (axis 0) of a 2-D table, got {E.shape}, axis {op.attrs}")
    if op.writer.spec(ids).dtype != "int64":
        raise op.refuse("gathers rows of a table by a float tensor; only token ids (integers) can index a table")
    (y,) = op.add(Embedding(op.layer_name(), E=E.astype(np.float32), mask_zero=False), [ids])
    return [Tensor(y, (*ids.axes, FEATURE))]


# -- arithmetic ------------------------------------------------------------------------------------

_NUMPY = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}
_MERGES = {"Add": "add", "Sub": "subtract", "Mul": "multiply"}
_CONSTANT_OPS = {"Add": ("add", "add"), "Sub": ("sub", "rsub"), "Mul": ("mul", "mul"), "Div": ("div", "rdiv")}


def _dim(kind: str, a: Any, b: Any) -> Any:
    if isinstance(a, int) and isinstance(b, int):
        return int(_NUMPY[kind](a, b)) if kind != "Div" else a // b
    if kind == "Mul" and 1 in (a, b):
        return b if a == 1 else a
    if kind == "Mul" and {a, b} == {"B", "T"}:
        return f"{a}*{b}"  # batch and time flattened in this order
    if (kind in ("Add", "Sub") and b == 0) or (kind == "Add" and a == 0):
        return b if a == 0 else a
    raise UnsupportedLayerError(f"{kind} of sizes {a!r} and {b!r} is not a size rnnstream can follow")


def _shape_arith(op: Op, a: Any, b: Any) -> Any:
    def dims(v: Any) -> tuple[Any, ...]:
        return v.dims if isinstance(v, Shape) else tuple(int(d) for d in np.asarray(v).reshape(-1))

    da, db = dims(a), dims(b)
    if len(da) != len(db) and 1 not in (len(da), len(db)):
        raise op.refuse(f"combines shapes {da} and {db}")
    n = max(len(da), len(db))
    try:
        out = tuple(_dim(op.node.op_type, da[i % len(da)], db[i % len(db)]) for i in range(n))
    except UnsupportedLayerError as e:
        raise op.refuse(str(e)) from None
    scalar = all(v.scalar if isinstance(v, Shape) else np.ndim(v) == 0 for v in (a, b))
    return Shape(out, scalar)


def _arith(op: Op) -> list[Any]:
    kind = op.node.op_type
    a, b = op.inputs
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return [_NUMPY[kind](a, b)]
    if isinstance(a, Shape | np.ndarray) and isinstance(b, Shape | np.ndarray):
        return [_shape_arith(op, a, b)]
    if isinstance(a, Tensor) and isinstance(b, Tensor):
        if kind not in _MERGES:
            raise op.refuse("dividing one tensor of the model by another is not supported")
        if a.axes != b.axes or op.writer.spec(a).shape != op.writer.spec(b).shape:
            raise op.refuse(f"its operands differ in layout ({a.describe()}, {b.describe()}); broadcasting is not read")
        (y,) = op.add(Merge(op.layer_name(), op=_MERGES[kind], keras_major=3), [a, b])
        return [Tensor(y, a.axes)]
    for x, c, reverse in ((a, b, False), (b, a, True)):
        if isinstance(x, Tensor) and isinstance(c, np.ndarray):
            constant = features_of(op, x, c, "the constant")
            return op.layer(ConstantOp(op.layer_name(), op=_CONSTANT_OPS[kind][reverse], constant=constant), x)
    raise op.refuse("its operands are not tensors of the model or constants")


# -- activations and normalisation -----------------------------------------------------------------


def _activation(name: str) -> Handler:
    def handle(op: Op) -> list[Any]:
        return op.layer(Activation(op.layer_name(), activation=name, keras_major=3), op.tensor(0))

    return handle


def _parametric(kind: str, **defaults: float) -> Handler:
    def handle(op: Op) -> list[Any]:
        params = {k: float(op.attrs.get(k, v)) for k, v in defaults.items()}
        if kind == "elu" and params["alpha"] == 1.0:
            return _activation("elu")(op)
        return op.layer(ParametricActivation(op.layer_name(), activation=parametric_name(kind, **params)), op.tensor(0))

    return handle


def _leaky_relu(op: Op) -> list[Any]:
    slope = float(op.attrs.get("alpha", 0.01))
    return op.layer(ReLU(op.layer_name(), max_value=None, negative_slope=slope, threshold=0.0), op.tensor(0))


_SELU = (np.float32(1.67326319217681884765625), np.float32(1.05070102214813232421875))


def _selu(op: Op) -> list[Any]:
    if (np.float32(op.attrs.get("alpha", _SELU[0])), np.float32(op.attrs.get("gamma", _SELU[1]))) != _SELU:
        raise op.refuse("Selu with alpha or gamma other than the standard constants is not supported")
    return _activation("selu")(op)


def _gelu(op: Op) -> list[Any]:
    if op.attrs.get("approximate", "none") != "none":
        raise op.refuse("approximate='tanh' is not supported; export the exact Gelu")
    return _activation("gelu")(op)


def _softmax(name: str) -> Handler:
    def handle(op: Op) -> list[Any]:
        x = op.tensor(0)
        axis = int(op.attrs.get("axis", -1 if op.opset >= 13 else 1))
        if x.axis(axis) != len(x.axes) - 1 or x.axes[-1] != FEATURE:
            raise op.refuse(f"{name} over axis {axis} of {x.describe()}: only the last (feature) axis can stream")
        return _activation(name)(op)

    return handle


def _layer_norm(op: Op) -> list[Any]:
    x = op.tensor(0)
    if x.axis(int(op.attrs.get("axis", -1))) != len(x.axes) - 1 or x.axes[-1] != FEATURE:
        raise op.refuse(f"normalises from axis {op.attrs.get('axis')} of {x.describe()}; only the last axis is read")
    gamma = op.const(1, "Scale").astype(np.float32).reshape(-1)
    beta = None if len(op.inputs) < 3 or op.inputs[2] is None else op.const(2, "B").astype(np.float32).reshape(-1)
    layer = LayerNorm(op.layer_name(), gamma=gamma, beta=beta, epsilon=float(op.attrs.get("epsilon", 1e-5)))
    return op.layer(layer, x)


def _dropout(op: Op) -> list[Any]:
    training = op.inputs[2] if len(op.inputs) > 2 else None
    if isinstance(training, np.ndarray) and bool(training):
        raise op.refuse("training_mode=True: dropout is random at inference")
    return [op.inputs[0]]


COMPUTE: dict[str, Handler] = {
    "MatMul": _matmul, "Gemm": _gemm, "Add": _arith, "Sub": _arith, "Mul": _arith, "Div": _arith,
    "Relu": _activation("relu"), "Tanh": _activation("tanh"), "Sigmoid": _activation("sigmoid"),
    "Softsign": _activation("softsign"), "Softplus": _activation("softplus"), "HardSwish": _activation("hard_silu"),
    "Elu": _parametric("elu", alpha=1.0), "HardSigmoid": _parametric("hard_sigmoid", alpha=0.2, beta=0.5),
    "ThresholdedRelu": _parametric("thresholded_relu", alpha=1.0), "LeakyRelu": _leaky_relu, "Selu": _selu,
    "Gelu": _gelu, "Softmax": _softmax("softmax"), "LogSoftmax": _softmax("log_softmax"),
    "LayerNormalization": _layer_norm, "Dropout": _dropout, "Identity": lambda op: [op.inputs[0]],
}  # fmt: skip
"""Operator type → handler; ``Gather`` of token ids is :func:`embedding`, called from the layout table."""

embedding = _embedding
