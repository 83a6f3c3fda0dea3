"""Builders for the ``keras.ops`` nodes of Keras 3 functional graphs (the mask computations)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rnnstream.importers.keras_context import LayerContext
from rnnstream.layers.layer import Layer
from rnnstream.layers.ops import Compare, ExpandDims, Fill, Join, Logical, Reduce

OpBuilder = Callable[[LayerContext, list[Any]], Layer]
"""``(context, constant positional arguments) -> layer``."""


def _compare(op: str) -> OpBuilder:
    def build(ctx: LayerContext, constants: list[Any]) -> Layer:
        if len(ctx.inputs) != 1 or len(constants) != 1 or not isinstance(constants[0], int | float):
            raise ctx.refuse("only comparisons of one tensor with one number are supported")
        return Compare(ctx.name, op=op, value=float(constants[0]))

    return build


def _reduce(op: str) -> OpBuilder:
    def build(ctx: LayerContext, constants: list[Any]) -> Layer:
        axis = ctx.config.get("axis")
        if axis is None:
            raise ctx.refuse(f"{op} over every axis includes time; only feature axes can stream")
        axes = axis if isinstance(axis, list | tuple) else [axis]
        return Reduce(ctx.name, op=op, axes=tuple(ctx.feature_axis(int(a)) for a in axes),
                      keepdims=bool(ctx.config.get("keepdims", False)))

    return build


def _logical(op: str) -> OpBuilder:
    def build(ctx: LayerContext, constants: list[Any]) -> Layer:
        if constants:
            raise ctx.refuse("logical operations with constants are not supported")
        return Logical(ctx.name, op=op)

    return build


def _expand_dims(ctx: LayerContext, constants: list[Any]) -> Layer:
    axis = int(ctx.config.get("axis", constants[0] if constants else -1))
    x = ctx.inputs[0]
    new_rank = (2 if x.sequence else 1) + len(x.shape) + 1
    feature_axis = axis if axis < 0 else axis - new_rank
    if not -(len(x.shape) + 1) <= feature_axis < 0:
        raise ctx.refuse(f"expand_dims at axis {axis} touches the batch or time axis")
    return ExpandDims(ctx.name, axis=feature_axis)


def _fill(value: float) -> OpBuilder:
    def build(ctx: LayerContext, constants: list[Any]) -> Layer:
        return Fill(ctx.name, value=value, dtype=str(ctx.config.get("dtype") or "float32"))

    return build


def _join(ctx: LayerContext, constants: list[Any]) -> Layer:
    return Join(ctx.name, axis=ctx.feature_axis(int(ctx.config.get("axis", 0))))


OPS: dict[str, OpBuilder] = {
    "NotEqual": _compare("not_equal"),
    "Equal": _compare("equal"),
    "Any": _reduce("any"),
    "All": _reduce("all"),
    "LogicalOr": _logical("or"),
    "LogicalAnd": _logical("and"),
    "LogicalNot": _logical("not"),
    "ExpandDims": _expand_dims,
    "OnesLike": _fill(1.0),
    "ZerosLike": _fill(0.0),
    "Concatenate": _join,
}


def build_op(ctx: LayerContext, constants: list[Any]) -> Layer:
    builder = OPS.get(ctx.class_name)
    if builder is None:
        raise ctx.refuse(
            "is a keras.ops operation rnnstream does not run; it knows the mask operations "
            f"{', '.join(sorted(OPS))}. Express the computation with layers instead"
        )
    return builder(ctx, constants)
