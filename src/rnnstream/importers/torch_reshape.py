"""Squeezes, views, reshapes and flattens of a traced ``forward``: the feature axes change, batch and time stay.

A PyTorch tensor ``[B, T, *features]`` is one rnnstream tensor ``[B, *features]`` per step, so
reshaping its features is a per-step :class:`~rnnstream.layers.reshape.Reshape`
(``head(out).squeeze(-1)``: ``[B, T, 1] → [B, T]``, ``x.view(x.size(0), x.size(1), 2, 8)``,
``x.flatten(2)``). Batch and time must stay as they are (given as ``x.size(0)`` or one ``-1``):
folding time into the features, or flattening batch and time together, is refused with the reason.

>>> import numpy as np
>>> Reshape("r", shape=()).apply([np.float32([[1.5], [2.0]])])  # a Linear(H, 1) head, squeezed
array([1.5, 2. ], dtype=float32)
"""

from __future__ import annotations

import math
from typing import Any

from rnnstream.errors import UnsupportedLayerError
from rnnstream.importers.axes import BATCH, FEATURE, TIME, UNIT, Dim, Shape, Stack, Tensor, Zeros, axis_name
from rnnstream.importers.torch_call import Call, describe
from rnnstream.layers.reshape import Reshape


def _as(call: Call, x: Tensor, axes: tuple[str, ...], features: tuple[int, ...]) -> Tensor:
    """``x`` laid out as ``axes``, its features reshaped to ``features`` where they change."""
    if features == tuple(call.writer.spec(x).shape):
        return Tensor(x.tensor, axes)
    (y,) = call.add(Reshape(call.layer_name(), shape=features), [x])
    return Tensor(y, axes)


def _features(call: Call, x: Tensor) -> tuple[int, ...]:
    return tuple(int(d) for d, a in zip(call.writer.dims(x), x.axes, strict=True) if a == FEATURE)


def squeeze(call: Call) -> Any:
    """``squeeze(dim)``: a unit or size-1 feature axis goes; a feature axis of another size stays (as in torch)."""
    value, dim = call.args[0], call.arg(1, "dim")
    if dim is None:
        raise call.refuse("squeeze() without a dim would also squeeze a batch of one stream; give the dim")
    dims = tuple(int(d) for d in dim) if isinstance(dim, tuple | list) else (int(dim),)
    if isinstance(value, Stack) and len(value.items) == 1 and dims in ((0,), (-len(value.items[0].axes) - 1,)):
        return value.items[0]
    if isinstance(value, Zeros):
        drop = {d % len(value.dims) for d in dims if value.dims[d] == 1}
        return Zeros(tuple(d for i, d in enumerate(value.dims) if i not in drop))
    x = call.tensor(value)
    sizes = call.writer.dims(x)
    try:
        indices = sorted({x.axis(d) for d in dims}, reverse=True)
    except UnsupportedLayerError as e:
        raise call.refuse(str(e)) from None
    axes, kept = list(x.axes), list(sizes)
    for i in indices:
        if axes[i] not in (UNIT, FEATURE):
            raise call.refuse(
                f"squeezes axis {i} of {x.describe()}, {axis_name(axes[i])}, whose size changes at run time (a "
                "batch of one stream, or one step, would lose it); squeeze a unit or feature axis"
            )
        if axes[i] == UNIT or kept[i] == 1:
            del axes[i], kept[i]
    return _as(call, x, tuple(axes), tuple(int(d) for d, a in zip(kept, axes, strict=True) if a == FEATURE))


def unsqueeze(call: Call) -> Tensor:
    """``unsqueeze(dim)``: a new last axis is a feature of size 1 (``Linear(1, n)`` reads it); elsewhere a unit axis."""
    x = call.tensor(call.args[0])
    dim = int(call.arg(1, "dim"))
    try:
        unit = x.with_unit(dim)
    except UnsupportedLayerError as e:
        raise call.refuse(str(e)) from None
    if dim % (len(x.axes) + 1) != len(x.axes):
        return unit
    return _as(call, x, (*x.axes, FEATURE), (*_features(call, x), 1))


def _entry(call: Call, size: Any) -> Dim:
    if isinstance(size, Shape) and size.scalar:
        return size.dims[0]
    if isinstance(size, int) and not isinstance(size, bool):
        return size
    raise call.refuse(f"reshapes to a size given as {describe(size)}; give numbers or sizes of the input (x.size(0))")


def reshape(call: Call) -> Tensor:
    """``view`` / ``reshape``: the batch and time axes stay (``x.size(k)`` or one ``-1``), features may change."""
    x = call.tensor(call.args[0])
    sizes = call.args[1:] if len(call.args) > 1 else (call.arg(1, "shape"),)
    if len(sizes) == 1 and isinstance(sizes[0], Shape) and not sizes[0].scalar:
        sizes = tuple(Shape((d,), True) for d in sizes[0].dims)
    elif len(sizes) == 1 and isinstance(sizes[0], tuple | list):
        sizes = tuple(sizes[0])
    target = [_entry(call, s) for s in sizes]
    lead = [a for a in x.axes if a in (BATCH, TIME)]
    atoms = [a for a in x.axes if a != UNIT]
    refusal = call.refuse(
        f"reshapes {x.describe()} (sizes {call.writer.dims(x)}) to {tuple(target)}: batch and time must stay "
        "in their places (given as x.size(0) / x.size(1), or one -1), before the features; only the features "
        "can change shape (folding time into the features, or merging batch and time, cannot stream)"
    )
    if atoms[: len(lead)] != lead or target.count(-1) > 1:
        raise refusal
    axes: list[str] = []
    k = 0
    for entry in target:
        if k < len(lead) and entry in (lead[k], -1):
            axes.append(lead[k])
            k += 1
        elif k < len(lead) and entry == 1:
            axes.append(UNIT)
        elif k < len(lead) or not isinstance(entry, int):
            raise refusal
        else:
            axes.append(FEATURE)
    features = [int(e) for e, a in zip(target, axes, strict=True) if a == FEATURE]
    total = math.prod(_features(call, x))
    if -1 in features:
        rest = -math.prod(features)
        if rest <= 0 or total % rest:
            raise refusal
        features[features.index(-1)] = total // rest
    if math.prod(features) != total:
        raise refusal
    return _as(call, x, tuple(axes), tuple(features))


def flatten(call: Call) -> Tensor:
    """``flatten(start_dim, end_dim)`` of feature (and unit) axes, or of unit axes around batch or time."""
    x = call.tensor(call.arg(0, "input"))
    return flatten_axes(call, x, int(call.arg(1, "start_dim", 0)), int(call.arg(2, "end_dim", -1)))


def flatten_axes(call: Call, x: Tensor, start: int, end: int) -> Tensor:
    try:
        s, e = x.axis(start), x.axis(end)
    except UnsupportedLayerError as error:
        raise call.refuse(str(error)) from None
    covered = [a for a in x.axes[s : e + 1] if a != UNIT]
    if s >= e:
        return x
    if all(a == FEATURE for a in covered):
        sizes = call.writer.dims(x)
        merged = math.prod(int(d) for d in sizes[s : e + 1])
        axes = (*x.axes[:s], FEATURE, *x.axes[e + 1 :])
        dims = (*sizes[:s], merged, *sizes[e + 1 :])
        return _as(call, x, axes, tuple(int(d) for d, a in zip(dims, axes, strict=True) if a == FEATURE))
    if len(covered) == 1:  # batch or time with unit axes around it
        return Tensor(x.tensor, (*x.axes[:s], covered[0], *x.axes[e + 1 :]))
    what = "folds time into the features" if TIME in covered else "merges the batch with other axes"
    raise call.refuse(
        f"flattens axes {start}..{end} of {x.describe()}: it {what}, which cannot stream; flatten feature axes "
        "only (e.g. flatten(2) on [B, T, F1, F2])"
    )


def flatten_module(call: Call, module: Any) -> Tensor:
    """``nn.Flatten(start_dim, end_dim)``."""
    return flatten_axes(call, call.tensor(call.arg(0, "input")), int(module.start_dim), int(module.end_dim))
