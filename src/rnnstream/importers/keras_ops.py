"""The ``keras.ops`` nodes of Keras 3 functional graphs → canonical layers, through one table.

When a Keras 3 functional model calls ``keras.ops`` on a symbolic tensor (``keras.ops.relu(h)``,
``h * 2.0 + 1.0``, ``h[:, -1, :]``), the ``.keras`` file records the operation's class (``Relu``,
``Multiply``, ``GetItem``), its constant options in the config and its arguments in the node. Mask
operations have their own builders, activations theirs (with their options:
:mod:`~rnnstream.importers.keras_activation_ops`); the others are read as the tf.keras 2 call they match
and built by :data:`~rnnstream.importers.keras_tf_ops.TF_OPS`, all through one table, :data:`OPS`.
Nothing is run: an operation in neither table is refused by name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rnnstream.importers.keras_activation_ops import KERAS3_ACTIVATIONS, ActivationBuilder
from rnnstream.importers.keras_context import LayerContext
from rnnstream.importers.keras_tf_call import TensorArg, TFCall
from rnnstream.importers.keras_tf_ops import TF_OPS
from rnnstream.layers.layer import Layer
from rnnstream.layers.ops import Compare, Fill, Join, Logical, Reduce

MaskBuilder = Callable[[LayerContext, list[Any]], Layer]
"""``(context, constant positional arguments) -> layer``, for the mask operations."""
NodeBuilder = Callable[[LayerContext, Any], list[Layer]]
"""``(context, the recorded node) -> layers``, chained."""


def _compare(op: str) -> MaskBuilder:
    def build(ctx: LayerContext, constants: list[Any]) -> Layer:
        if len(ctx.inputs) != 1 or len(constants) != 1 or not isinstance(constants[0], int | float):
            raise ctx.refuse("only comparisons of one tensor with one number are supported")
        return Compare(ctx.name, op=op, value=float(constants[0]))

    return build


def _reduce(op: str) -> MaskBuilder:
    def build(ctx: LayerContext, constants: list[Any]) -> Layer:
        axis = ctx.config.get("axis")
        if axis is None:
            raise ctx.refuse(f"{op} over every axis includes time; only feature axes can stream")
        axes = axis if isinstance(axis, list | tuple) else [axis]
        return Reduce(ctx.name, op=op, axes=tuple(ctx.feature_axis(int(a)) for a in axes),
                      keepdims=bool(ctx.config.get("keepdims", False)))

    return build


def _logical(op: str) -> MaskBuilder:
    def build(ctx: LayerContext, constants: list[Any]) -> Layer:
        if constants:
            raise ctx.refuse("logical operations with constants are not supported")
        return Logical(ctx.name, op=op)

    return build


def _fill(value: float) -> MaskBuilder:
    def build(ctx: LayerContext, constants: list[Any]) -> Layer:
        return Fill(ctx.name, value=value, dtype=str(ctx.config.get("dtype") or "float32"))

    return build


def _join(ctx: LayerContext, constants: list[Any]) -> Layer:
    return Join(ctx.name, axis=ctx.feature_axis(int(ctx.config.get("axis", 0))))


_MASKS: dict[str, MaskBuilder] = {
    "NotEqual": _compare("not_equal"),
    "Equal": _compare("equal"),
    "Any": _reduce("any"),
    "All": _reduce("all"),
    "LogicalOr": _logical("or"),
    "LogicalAnd": _logical("and"),
    "LogicalNot": _logical("not"),
    "OnesLike": _fill(1.0),
    "ZerosLike": _fill(0.0),
}

_AS_TF: dict[str, str] = {
    "Add": "math.add", "Subtract": "math.subtract", "Multiply": "math.multiply", "TrueDivide": "math.truediv",
    "Divide": "math.divide", "Maximum": "math.maximum", "Minimum": "math.minimum", "Negative": "math.negative",
    "Concatenate": "concat", "Mean": "math.reduce_mean", "Sum": "math.reduce_sum", "Max": "math.reduce_max",
    "Min": "math.reduce_min", "ExpandDims": "expand_dims", "Reshape": "reshape", "GetItem": "__operators__.getitem",
}
"""Keras 3 operation class → the tf.keras 2 function it computes (its builder's key in ``TF_OPS``)."""

_RENAMED = {"newshape": "shape"}
"""Keras 3 option → the tf.keras 2 argument it is read as."""



def read_op_call(ctx: LayerContext, node: Any) -> TFCall:
    """A Keras 3 node ``{"args": [x, y?], "kwargs": {...}}`` and the op's config, as a tf.keras 2 call:
    ``x`` first, ``y`` as ``y`` (``slice_spec`` for ``GetItem``), the options as keyword arguments."""
    found = 0

    def arg(value: Any) -> Any:
        nonlocal found
        if isinstance(value, dict) and value.get("class_name") == "__keras_tensor__":
            found += 1
            return TensorArg(found - 1)
        if isinstance(value, dict) and value.get("class_name") == "__slice__":
            return dict(value.get("config") or {})
        return [arg(v) for v in value] if isinstance(value, list | tuple) else value

    node = node if isinstance(node, dict) else {}
    args = [arg(a) for a in node.get("args", [])]
    options = {_RENAMED.get(k, k): arg(v) for k, v in ctx.config.items() if k not in ("name", "dtype")}
    options.update({k: arg(v) for k, v in (node.get("kwargs") or {}).items()})
    if len(args) > 2 or options.get("initial") is not None:
        raise ctx.refuse(f"is called with arguments {args[1:]!r} and options {options!r}; rnnstream reads "
                         "one tensor, at most one more argument, and no 'initial'")
    if len(args) == 2:
        options["slice_spec" if ctx.class_name == "GetItem" else "y"] = args[1]
    return TFCall(args[0] if args else None, options)


def _mask(builder: MaskBuilder) -> NodeBuilder:
    return lambda ctx, node: [builder(ctx, _constants(node))]


def _as_tf(name: str) -> NodeBuilder:
    def build(ctx: LayerContext, node: Any) -> list[Layer]:
        layer = TF_OPS[name](ctx, read_op_call(ctx, node))
        return layer if isinstance(layer, list) else [layer]

    return build


def _activation(builder: ActivationBuilder) -> NodeBuilder:
    return lambda ctx, node: [builder(ctx, read_op_call(ctx, node))]


def _concatenate(ctx: LayerContext, node: Any) -> list[Layer]:
    """Masks (booleans) join as masks; values as a ``Concatenate`` layer."""
    if ctx.inputs and all(x.dtype == "bool" for x in ctx.inputs):
        return [_join(ctx, _constants(node))]
    return _as_tf("concat")(ctx, node)


OPS: dict[str, NodeBuilder] = {
    **{name: _mask(builder) for name, builder in _MASKS.items()},
    **{name: _as_tf(function) for name, function in _AS_TF.items()},
    **{name: _activation(builder) for name, builder in KERAS3_ACTIVATIONS.items()},
    "Concatenate": _concatenate,
}
"""Keras 3 operation class (as a ``.keras`` file records it) → builder."""


def build_op(ctx: LayerContext, node: Any) -> list[Layer]:
    """The layers for one ``keras.ops`` node, chained; ``ctx.class_name`` is the operation's class."""
    builder = OPS.get(ctx.class_name)
    if builder is None:
        raise ctx.refuse(
            f"{ctx.class_name} is a keras.ops operation rnnstream does not convert (it never runs code from a "
            f"model file, and reads operations only through its table). Convertible: {', '.join(sorted(OPS))}"
        )
    return builder(ctx, node)


def _constants(node: Any) -> list[Any]:
    """The positional arguments of a Keras 3 call that are not tensors (e.g. the 0 of ``x != 0``)."""
    if not isinstance(node, dict):
        return []
    return [a for a in node.get("args", []) if not (isinstance(a, dict) and a.get("class_name") == "__keras_tensor__")]
