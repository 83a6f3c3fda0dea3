"""tf.keras 2's TF-op nodes (``TFOpLambda``, ``SlicingOpLambda``) → canonical layers, through one table.

When a tf.keras 2 functional model calls a TensorFlow function on a Keras tensor (``tf.nn.relu(h)``,
``h * 2 + 1``, ``h[:, -1, :]``), the file records the function's name (``"nn.relu"``,
``"math.multiply"``, ``"__operators__.getitem"``) and its arguments: the first one in the node itself
(see :mod:`~rnnstream.importers.keras_tf_call`). rnnstream reads the name through :data:`TF_OPS` and never
runs anything: a function that is not in the table is refused by name.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from rnnstream.importers.keras_activation_ops import TF_ACTIVATIONS
from rnnstream.importers.keras_context import LayerContext
from rnnstream.importers.keras_tf_call import TensorArg, TFCall
from rnnstream.importers.keras_tf_slices import build_getitem, build_reshape
from rnnstream.layers.elementwise import ConstantOp
from rnnstream.layers.features import FeatureReduce
from rnnstream.layers.layer import Layer
from rnnstream.layers.merge import Concatenate, Merge
from rnnstream.layers.ops import ExpandDims

TFBuilder = Callable[[LayerContext, TFCall], "Layer | list[Layer]"]

_BINARY = {
    "__operators__.add": "add", "math.add": "add", "math.subtract": "subtract", "math.multiply": "multiply",
    "math.truediv": "divide", "math.divide": "divide", "math.maximum": "maximum", "math.minimum": "minimum",
}
_WITH_CONSTANT = {"add": ("add", "add"), "subtract": ("sub", "rsub"), "multiply": ("mul", "mul"),
                  "divide": ("div", "rdiv")}
"""Operation → (``tensor ∘ constant``, ``constant ∘ tensor``) of :class:`ConstantOp`."""


def _binary(op: str) -> TFBuilder:
    def build(ctx: LayerContext, call: TFCall) -> Layer:
        return _combine(ctx, call, op)

    return build


def _combine(ctx: LayerContext, call: TFCall, op: str) -> Layer:
    """``x ∘ y``: a merge of two tensors, or one tensor with a constant."""
    x, y = call.first, call.kwargs.get("y")
    tensors = [isinstance(x, TensorArg), isinstance(y, TensorArg)]
    if all(tensors):
        if op == "divide":
            raise ctx.refuse("divides a tensor by a tensor; rnnstream divides only by (or into) a constant")
        return Merge(ctx.name, op=op, keras_major=ctx.keras_major)
    if not any(tensors) or op not in _WITH_CONSTANT:
        raise ctx.refuse(f"{op} of {x!r} and {y!r} is not supported: it needs one tensor and one number")
    constant = y if tensors[0] else x
    if not isinstance(constant, int | float | list | tuple):
        raise ctx.refuse(f"the constant {constant!r} is not a number or a list of numbers")
    kind = _WITH_CONSTANT[op][0 if tensors[0] else 1]
    return ConstantOp(ctx.name, op=kind, constant=np.asarray(constant, dtype=np.float32))


def _negative(ctx: LayerContext, call: TFCall) -> Layer:
    return ConstantOp(ctx.name, op="mul", constant=np.asarray(-1.0, dtype=np.float32))


def _concat(ctx: LayerContext, call: TFCall) -> Layer:
    if not isinstance(call.first, list) or not all(isinstance(v, TensorArg) for v in call.first):
        raise ctx.refuse("concatenates constants with tensors; only tensors of the graph are supported")
    return Concatenate(ctx.name, axis=ctx.feature_axis(int(call.arg(ctx, "axis", 0))), keras_major=ctx.keras_major)


_REDUCE = {f"math.reduce_{op}": op for op in ("mean", "sum", "max", "min")}


def _reduce(op: str) -> TFBuilder:
    def build(ctx: LayerContext, call: TFCall) -> Layer:
        axis = call.arg(ctx, "axis")
        if axis is None:
            raise ctx.refuse("reduces over every axis, time included: it needs the whole sequence")
        axes = axis if isinstance(axis, list | tuple) else [axis]
        return FeatureReduce(ctx.name, op=op, axes=tuple(ctx.feature_axis(int(a)) for a in axes),
                             keepdims=bool(call.arg(ctx, "keepdims", False)))

    return build


def _expand_dims(ctx: LayerContext, call: TFCall) -> Layer:
    axis = int(call.arg(ctx, "axis", 0))
    x = ctx.inputs[0]
    full = axis if axis < 0 else axis - ((2 if x.sequence else 1) + len(x.shape) + 1)
    if not -(len(x.shape) + 1) <= full < 0:
        raise ctx.refuse(f"expand_dims at axis {axis} of {x.describe()} touches the batch or time axis")
    return ExpandDims(ctx.name, axis=full)


TF_OPS: dict[str, TFBuilder] = {
    **TF_ACTIVATIONS,
    **{name: _binary(op) for name, op in _BINARY.items()},
    "math.negative": _negative,
    "concat": _concat,
    **{name: _reduce(op) for name, op in _REDUCE.items()},
    "expand_dims": _expand_dims,
    "reshape": build_reshape,
    "__operators__.getitem": build_getitem,
}
"""TensorFlow function name (as tf.keras 2 records it) → builder."""

_REFUSED = {
    "compat.v1.shape": "it reads the tensor's dynamic shape (batch size and time length), which a stream does not "
    "have; reshape feature axes with keras.layers.Reshape((-1, ...)) instead",
}
_REFUSED["shape"] = _REFUSED["compat.v1.shape"]


def build_tf_op(ctx: LayerContext, call: TFCall) -> list[Layer]:
    """The layers for one TF-op node, chained; ``ctx.class_name`` is the recorded function name."""
    reason = _REFUSED.get(ctx.class_name)
    if reason is not None:
        raise ctx.refuse(f"tf.{ctx.class_name} cannot stream: {reason}")
    builder = TF_OPS.get(ctx.class_name)
    if builder is None:
        raise ctx.refuse(
            f"tf.{ctx.class_name} is a TensorFlow function rnnstream does not convert (it never runs code from a "
            f"model file, and reads TF ops only through its table). Convertible: {', '.join(sorted(TF_OPS))}"
        )
    layer = builder(ctx, call)
    return layer if isinstance(layer, list) else [layer]
