"""Temporal convolutions in ONNX (a PyTorch TCN exported by ``torch.onnx.export``) → causal convolutions.

A 1-D ``Conv`` on ``[B, C, T]`` whose window sees exactly ``(k-1)·d`` steps of zero padding before the first
step is :class:`~rnnstream.layers.conv.CausalConv1D` with ``K[j, i, o] = W[o, i, j]``. The padding comes
from a ``Pad`` (TorchScript exporter), a ``Concat`` of zeros on the time axis, or the ``Conv``'s own
``pads`` (the dynamo exporter folds ``F.pad`` into them); padding at the end is dropped by the chomp
``Slice`` (``[..., :-p]``) right after the ``Conv``. What reads future steps (padding that is not chomped,
too little padding at the start), changes the step rate (``strides``) or slides over more than time (2-D
and 3-D ``Conv``) is refused with the reason.

>>> sorted(CONV)
['Concat', 'Conv', 'Pad', 'Slice']
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rnnstream.importers.axes import BATCH, FEATURE, TIME, Tensor, Zeros, axis_name
from rnnstream.importers.causal_padding import TimePadded, Unchomped
from rnnstream.importers.onnx_layout import BIG, LAYOUT
from rnnstream.importers.onnx_ops import Handler, Op, pending_error
from rnnstream.layers.conv import CausalConv1D

_ZEROS = "a stream starts a convolution's past at zeros, so only zero padding streams"


def _where(op: Op) -> str:
    return f"ONNX node {op.name!r} ({op.node.op_type})"


def _time_pads(op: Op, x: Tensor, begins: list[int], ends: list[int]) -> tuple[int, int]:
    """The (left, right) padding of ``x``'s time axis; padding of any other axis is refused."""
    for i, (b, e) in enumerate(zip(begins, ends, strict=True)):
        if (b or e) and x.axes[i] != TIME:
            raise op.refuse(f"pads {axis_name(x.axes[i])} of {x.describe()}; only the time axis can be padded")
        if b < 0 or e < 0:
            raise op.refuse(f"crops the time axis ({b}, {e}); cropping a sequence cannot stream")
    position = x.axes.index(TIME) if TIME in x.axes else None
    return (begins[position], ends[position]) if position is not None else (0, 0)


def _pad(op: Op) -> list[Any]:
    """``Pad`` with zeros of the time axis, before a ``Conv``."""
    data = op.inputs[0]
    x = data.x if isinstance(data, TimePadded) else op.tensor(0)
    mode = op.attrs.get("mode") or "constant"
    if mode != "constant":
        raise op.refuse(f"mode={mode!r} fills the padding from the sequence itself; {_ZEROS}")
    if op.opset >= 11:
        pads = [int(p) for p in op.const(1, "pads")]
        fill = op.inputs[2] if len(op.inputs) > 2 else None
        axes = op.inputs[3] if len(op.inputs) > 3 and op.inputs[3] is not None else None
    else:
        pads, fill, axes = [int(p) for p in op.attrs["pads"]], op.attrs.get("value"), None
    if fill is not None and np.any(np.asarray(fill)):
        raise op.refuse(f"pads with {np.asarray(fill).reshape(-1)[0]}; {_ZEROS}")
    rank = len(x.axes)
    chosen = [int(a) % rank for a in np.asarray(op.const(3, "axes"))] if axes is not None else list(range(rank))
    begins, ends = [0] * rank, [0] * rank
    for n, a in enumerate(chosen):
        begins[a], ends[a] = pads[n], pads[n + len(chosen)]
    left, right = _time_pads(op, x, begins, ends)
    if isinstance(data, TimePadded):
        left, right = left + data.left, right + data.right
    return [TimePadded(x, left, right, _where(op))]


def _kernel(op: Op, W: np.ndarray[Any, Any], channels: int, groups: int) -> np.ndarray[Any, Any]:
    """``K (k, I, O)`` from ``W (O, I/groups, k)``; grouped channels become a block-diagonal kernel."""
    units, per_group, k = W.shape
    if per_group * groups != channels:
        raise op.refuse(f"weight {W.shape} with group={groups} does not fit {channels} input channels")
    K = np.zeros((k, channels, units), np.float32)  # (k, I, O)
    O_g = units // groups
    for n in range(groups):
        K[:, n * per_group : (n + 1) * per_group, n * O_g : (n + 1) * O_g] = W[n * O_g : (n + 1) * O_g].transpose(
            2, 1, 0
        )
    return K


def _own_pads(op: Op, past: int) -> tuple[int, int]:
    """The ``Conv``'s own (left, right) padding, from ``pads`` or ``auto_pad``."""
    auto = op.attrs.get("auto_pad") or "NOTSET"
    if auto == "VALID":
        return 0, 0
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        small, large = past // 2, past - past // 2
        return (small, large) if auto == "SAME_UPPER" else (large, small)
    pads = [int(p) for p in op.attrs.get("pads") or (0, 0)]
    return pads[0], pads[1]


def _check_window(op: Op, strides: int, left: int, past: int) -> None:
    if strides != 1:
        raise op.refuse(
            f"strides={strides} gives one output every {strides} steps: it changes the step rate, which a stream "
            "(one output per input step) cannot"
        )
    if left < past:
        raise op.refuse(
            f"is not causal: its window spans (k-1)·d = {past} past steps but it is padded by {left} at the start, "
            f"so each output reads {past - left} future steps; pad the start by exactly {past}"
        )
    if left > past:
        raise op.refuse(
            f"is padded by {left} at the start, more than its window's (k-1)·d = {past} past steps: it adds "
            f"{left - past} outputs before the first step, shifting the time axis; pad the start by exactly {past}"
        )


def _conv(op: Op) -> list[Any]:
    """A 1-D ``Conv`` on ``[B, C, T]``: a causal convolution, or an :class:`Unchomped` one if padded at the end."""
    data = op.inputs[0]
    x = data.x if isinstance(data, TimePadded) else op.tensor(0)
    W = np.asarray(op.const(1, "weight (W)"), np.float32)
    if W.ndim != 3:
        raise op.refuse(f"is a {W.ndim - 2}-D convolution: its window slides over more than the time axis")
    if x.axes != (BATCH, FEATURE, TIME):
        raise op.refuse(f"convolves the last axis of {x.describe()}, which is not time after channels ([B, C, T])")
    d = int((op.attrs.get("dilations") or [1])[0])
    past = (W.shape[2] - 1) * d
    left, right = _own_pads(op, past)
    if isinstance(data, TimePadded):
        left, right = left + data.left, right + data.right
    _check_window(op, int((op.attrs.get("strides") or [1])[0]), left, past)
    K = _kernel(op, W, int(op.writer.dims(x)[1]), int(op.attrs.get("group") or 1))
    b = (
        np.asarray(op.const(2, "bias (B)"), np.float32).copy()
        if len(op.inputs) > 2 and op.inputs[2] is not None
        else None
    )
    (y,) = op.add(CausalConv1D(op.layer_name(), K=K, b=b, dilation=d, activation="linear"), [x])
    out = Tensor(y, x.axes)
    return [Unchomped(out, right, _where(op)) if right else out]


def _slice(op: Op) -> list[Any]:
    """The chomp ``Slice`` (time axis, ``0 : -extra``) of an :class:`Unchomped` convolution; any other Slice as
    the layout table reads it."""
    data = op.inputs[0]
    if not isinstance(data, Unchomped):
        return LAYOUT["Slice"](op)
    if op.opset < 10:
        cuts = list(zip(op.attrs.get("axes", [2]), op.attrs["starts"], op.attrs["ends"], [1], strict=False))
    else:
        starts, ends = (np.asarray(op.const(i, "starts and ends")).tolist() for i in (1, 2))
        axes = np.asarray(op.const(3, "axes")).tolist() if len(op.inputs) > 3 and op.inputs[3] is not None else None
        steps = np.asarray(op.const(4, "steps")).tolist() if len(op.inputs) > 4 and op.inputs[4] is not None else None
        n = len(starts)
        cuts = list(zip(axes or range(n), starts, ends, steps or [1] * n, strict=True))
    rank = len(data.y.axes)
    kept = [c for c in cuts if not (c[1] == 0 and c[2] >= BIG and c[3] == 1)]
    if [(int(a) % rank, s, e, st) for a, s, e, st in kept] != [(rank - 1, 0, -data.extra, 1)]:
        raise op.refuse(
            f"slices {cuts} (axis, start, end, step) of the output of {data.what}, which has {data.extra} steps "
            f"of padding at the end; only the chomp of the time axis 0:-{data.extra} that drops them streams"
        )
    return [data.y]


def _concat(op: Op) -> list[Any]:
    """Zeros joined to a ``[B, C, T]`` tensor on its time axis: padding; constants and zeros of a known shape
    (the TorchScript exporter's ``pads``): folded; anything else as the layout table reads it."""
    values, axis = op.inputs, int(op.attrs["axis"])
    pending = next((e for v in values if (e := pending_error(v)) is not None), None)
    if pending is not None:
        raise pending
    tensors = [v for v in values if isinstance(v, Tensor)]
    if len(tensors) == 1 and len(values) > 1 and all(isinstance(v, Tensor | Zeros) for v in values):
        x = tensors[0]
        if x.axes[x.axis(axis)] == TIME:
            at = next(i for i, v in enumerate(values) if v is x)
            sizes = [v.dims[x.axis(axis)] if isinstance(v, Zeros) else 0 for v in values]
            if not all(isinstance(s, int) for s in sizes):
                raise op.refuse("joins zeros of a size known only at run time to the time axis")
            left, right = sum(int(s) for s in sizes[:at]), sum(int(s) for s in sizes[at + 1 :])
            return [TimePadded(x, left, right, _where(op))]
    known = [v for v in values if isinstance(v, np.ndarray)]
    if known and all(isinstance(v, np.ndarray) or _constant_zeros(v) for v in values):
        dtype = known[0].dtype
        arrays = [v if isinstance(v, np.ndarray) else np.zeros([int(d) for d in v.dims], dtype) for v in values]
        return [np.concatenate(arrays, axis=axis)]
    return LAYOUT["Concat"](op)


def _constant_zeros(value: Any) -> bool:
    return isinstance(value, Zeros) and all(isinstance(d, int) for d in value.dims)


CONV: dict[str, Handler] = {"Conv": _conv, "Pad": _pad, "Slice": _slice, "Concat": _concat}
"""Operator type → handler, over :data:`~rnnstream.importers.onnx_layout.LAYOUT`'s ``Slice`` and ``Concat``."""
