"""Keras layers that reshape or rescale a step's features: ``Reshape``, ``Permute``, ``Rescaling``.

Keras sees a sequence as ``(B, T, *features)`` and a whole-sequence value (an RNN's
``return_sequences=False`` output, or a model input without a time axis) as ``(B, *features)``.
Only the features may be reshaped or permuted: a Reshape that regroups values across time steps (a
flatten of the sequence, or a new time length) needs steps that have not arrived yet, and a Permute
that moves the time axis reorders the stream itself.
"""

from __future__ import annotations

from math import prod
from typing import Any

import numpy as np

from rnnstream.errors import UnsupportedLayerError
from rnnstream.importers.keras_context import LayerContext
from rnnstream.layers.elementwise import ParametricActivation, parametric_name
from rnnstream.layers.layer import Layer
from rnnstream.layers.reshape import Permute, Reshape


def _resolve(ctx: LayerContext, target: list[int], size: int) -> tuple[int, ...]:
    """``target`` with its one ``-1`` filled in so that it holds ``size`` values."""
    known = prod(d for d in target if d != -1)
    if target.count(-1) > 1 or (-1 in target and (known == 0 or size % known)):
        raise ctx.refuse(f"target_shape {tuple(target)} cannot hold the {size} values of one step")
    return tuple(size // known if d == -1 else d for d in target)


def _mixes_time(ctx: LayerContext, target: list[int]) -> UnsupportedLayerError:
    x = ctx.inputs[0]
    return ctx.refuse(
        f"target_shape {tuple(target)} regroups the values of {x.describe()} across time steps (each step "
        f"holds {prod(x.shape)} values): it mixes the time axis into the features, which needs steps that have "
        "not arrived yet. Only a Reshape that keeps the time axis first, target_shape (-1, ...) holding one "
        "step's values, can stream"
    )


def build_reshape(ctx: LayerContext) -> Layer:
    ctx.take()
    x = ctx.inputs[0]
    target = [int(d) for d in ctx.config["target_shape"]]
    size = prod(x.shape)
    if not x.sequence:  # no time axis: every axis after the batch is a feature
        shape = _resolve(ctx, target, size)
        if prod(shape) != size:
            raise ctx.refuse(f"target_shape {tuple(target)} does not hold the {size} values of {x.describe()}")
        return Reshape(ctx.name, shape=shape)
    if not target:
        raise _mixes_time(ctx, target)
    features = target[1:]
    if -1 in features:
        raise ctx.refuse(
            f"target_shape {tuple(target)} fixes the first axis and leaves a feature axis as -1, so whether "
            "the first axis stays the time axis depends on the sequence length; write it as "
            "Reshape((-1, ...)) with every feature size given"
        )
    if prod(features) != size:  # the first axis would no longer be one step per position
        raise _mixes_time(ctx, target)
    return Reshape(ctx.name, shape=tuple(features))


def build_permute(ctx: LayerContext) -> Layer:
    ctx.take()
    x = ctx.inputs[0]
    dims = [int(d) for d in ctx.config["dims"]]
    if x.sequence:
        if not dims or dims[0] != 1:
            raise ctx.refuse(
                f"dims {tuple(dims)} move the time axis (axis 1) of {x.describe()}: the stream's steps would be "
                "reordered. Only feature axes can be permuted; keep 1 first"
            )
        dims = dims[1:]
    lead = 2 if x.sequence else 1
    return Permute(ctx.name, perm=tuple(d - lead for d in dims))


def _scalar(ctx: LayerContext, key: str, default: float) -> float:
    value: Any = ctx.config.get(key, default)
    if not isinstance(value, int | float | list | tuple):
        raise ctx.refuse(f"{key} {value!r} is not a number; rnnstream converts Rescaling with a number as {key}")
    array = np.asarray(value, dtype=np.float64)
    if array.size != 1:
        raise ctx.refuse(
            f"{key} {value!r} is a per-feature array; rnnstream converts Rescaling with a single scale and offset"
        )
    return float(array.reshape(()))


def build_rescaling(ctx: LayerContext) -> Layer:
    """``y = x · scale + offset`` (Keras' order of operations, in float32)."""
    ctx.take()
    scale, offset = _scalar(ctx, "scale", 1.0), _scalar(ctx, "offset", 0.0)
    return ParametricActivation(ctx.name, activation=parametric_name("affine", alpha=scale, beta=offset))
