"""Reductions in a traced ``forward``: over feature axes they are per step (a
:class:`~rnnstream.layers.features.FeatureReduce`); over time they need the future, over the batch they mix streams.

``h.mean(-1)``, ``torch.sum(h, dim=2, keepdim=True)``, ``h.amax(-1)`` on ``[B, T, F]`` reduce each step's
features. ``max`` / ``min`` with a dim also return indices, which rnnstream does not read: ``amax`` / ``amin``
are their values.

>>> sorted(METHODS)
['amax', 'amin', 'cumsum', 'max', 'mean', 'min', 'sum']
"""

from __future__ import annotations

from typing import Any

import torch

from rnnstream.importers.axes import FEATURE, TIME, Tensor, axis_name
from rnnstream.importers.torch_call import Call, Handler
from rnnstream.layers.features import FeatureReduce

NEEDS_FUTURE = "it needs the whole sequence, including steps that have not arrived yet"


def _reduce(op: str, all_axes: Any = None) -> Handler:
    """``op`` over the given feature axes (``dim``); ``all_axes``: the ``dim`` that means every axis."""

    def handle(call: Call) -> Tensor:
        x = call.tensor(call.args[0])
        dim = call.arg(1, "dim", all_axes)
        if dim is None or dim == ():
            raise call.refuse(f"{op} over every axis mixes the streams of the batch and {NEEDS_FUTURE}; give dim")
        dims = sorted({x.axis(int(d)) for d in (dim if isinstance(dim, tuple | list) else (dim,))})
        for d in dims:
            if x.axes[d] == TIME:
                raise call.refuse(f"cannot stream: {op} over time: {NEEDS_FUTURE}")
            if x.axes[d] != FEATURE:
                raise call.refuse(
                    f"{op} over axis {d} of {x.describe()}, {axis_name(x.axes[d])}, is not read; reduce feature axes"
                )
        keep = bool(call.arg(2, "keepdim", False))
        axes = tuple(-x.axes[d:].count(FEATURE) for d in dims)  # rnnstream's feature axes, from the end
        (y,) = call.add(FeatureReduce(call.layer_name(), op=op, axes=axes, keepdims=keep), [x])
        return Tensor(y, x.axes if keep else tuple(a for k, a in enumerate(x.axes) if k not in dims))

    return handle


def _refused(reason: str) -> Handler:
    def handle(call: Call) -> Any:
        raise call.refuse(f"cannot stream: {reason}")

    return handle


_WITH_INDICES = (
    f"over time {NEEDS_FUTURE}; over features it also returns indices, which rnnstream does not read: "
    "use amax / amin for the values"
)
_CUMSUM = "a running sum over time is state rnnstream does not keep; over features it is not supported"

FUNCTIONS: dict[Any, Handler] = {
    torch.mean: _reduce("mean"), torch.sum: _reduce("sum"), torch.amax: _reduce("max", ()),
    torch.amin: _reduce("min", ()), torch.max: _refused(_WITH_INDICES), torch.min: _refused(_WITH_INDICES),
    torch.cumsum: _refused(_CUMSUM),
}  # fmt: skip

METHODS: dict[str, Handler] = {
    "mean": _reduce("mean"), "sum": _reduce("sum"), "amax": _reduce("max", ()), "amin": _reduce("min", ()),
    "max": _refused(_WITH_INDICES), "min": _refused(_WITH_INDICES), "cumsum": _refused(_CUMSUM),
}  # fmt: skip
