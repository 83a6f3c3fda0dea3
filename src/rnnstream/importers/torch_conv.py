"""Temporal convolutional networks (TCN) as PyTorch writes them → :class:`~rnnstream.layers.conv.CausalConv1D`.

A TCN convolves ``[B, C, T]`` (time last: ``x.transpose(1, 2)`` of a ``[B, T, C]`` input, or an input taken
channels first) and makes ``nn.Conv1d(k, dilation=d)`` causal in one of four ways, all read here:

- ``F.pad(x, ((k-1)·d, 0))`` then the convolution,
- ``nn.ConstantPad1d(((k-1)·d, 0), 0)`` (or ``nn.ZeroPad1d``) then the convolution,
- ``torch.cat([x.new_zeros(x.size(0), C, (k-1)·d), x], dim=2)`` then the convolution,
- the "chomp": ``Conv1d(padding=(k-1)·d)`` then ``y[:, :, :-(k-1)·d]`` (locuslab's ``Chomp1d``).

Each gives ``y_t = b + Σ_j W[:, :, j] x_{t-(k-1-j)·d}``: the canonical causal convolution with
``K[j, i, o] = W[o, i, j]``. The padding is carried to the convolution as a :class:`TimePadded` value and
a convolution padded at the end as an :class:`Unchomped` one; used in any other way they are refused.
A convolution that reads future steps (padding without a chomp, ``padding="same"``) or changes the step
rate (``stride > 1``) is refused with the reason.

>>> from rnnstream.importers.axes import BATCH, FEATURE, TIME
>>> TimePadded(Tensor(0, (BATCH, FEATURE, TIME)), 2, 0, "F.pad").left
2
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rnnstream.importers.axes import BATCH, FEATURE, TIME, Tensor, Zeros, axis_name
from rnnstream.importers.causal_padding import TimePadded, Unchomped
from rnnstream.importers.torch_call import Call, weight
from rnnstream.layers.conv import CausalConv1D
from rnnstream.types import FloatArray

_ZEROS = "a stream starts a convolution's past at zeros, so only zero padding streams"
_DECLARE = (
    'if forward takes [B, C, T], say so: input_layout="NCT" (from_torch finds it by itself only where the input '
    "goes straight into a Conv1d or its padding)"
)


def _padded(call: Call, value: Any, left: int, right: int, fill: Any) -> TimePadded:
    """``value`` padded by ``left`` / ``right`` steps of ``fill`` on its time axis (the last axis)."""
    if fill is not None and float(fill) != 0.0:
        raise call.refuse(f"pads with {fill}; {_ZEROS}")
    if left < 0 or right < 0:
        raise call.refuse(f"crops the time axis ({left}, {right}); cropping a sequence cannot stream")
    if isinstance(value, TimePadded):
        return TimePadded(value.x, value.left + left, value.right + right, call.what)
    x = call.tensor(value)
    if x.axes[-1] != TIME:
        raise call.refuse(
            f"pads the last axis of {x.describe()}, {axis_name(x.axes[-1])}; only the time axis of a [B, C, T] "
            f"sequence can be padded, before a Conv1d; {_DECLARE}"
        )
    return TimePadded(x, left, right, call.what)


def f_pad(call: Call) -> TimePadded:
    """``F.pad(x, (left, right), mode="constant", value=0)`` of the time axis."""
    pad = tuple(int(p) for p in call.arg(1, "pad"))
    mode, fill = call.arg(2, "mode", "constant"), call.arg(3, "value")
    if mode != "constant":
        raise call.refuse(f"mode={mode!r} fills the padding from the sequence itself; {_ZEROS}")
    if len(pad) % 2 or len(pad) < 2 or any(pad[2:]):
        raise call.refuse(f"pads {pad}: axes other than the last (time) one; only the time axis can be padded")
    return _padded(call, call.arg(0, "input"), pad[0], pad[1], fill)


def constant_pad(call: Call, module: Any) -> TimePadded:
    """``nn.ConstantPad1d((left, right), value)`` and ``nn.ZeroPad1d``."""
    left, right = (int(p) for p in module.padding)
    return _padded(call, call.arg(0, "input"), left, right, module.value)


def zero_concat(call: Call, items: list[Any], dim: int) -> TimePadded:
    """``torch.cat([zeros, x], dim=time)``: ``x`` padded by the zeros' steps (at the start; zeros after it: at
    the end), the zeros the size of ``x`` off the time axis (``x.new_zeros(x.size(0), C, (k-1)·d)``)."""
    values = [v for v in items if not isinstance(v, Zeros)]
    if len(values) != 1:
        raise call.refuse(
            f"joins tensors of zeros with {len(values)} tensors of the model; zeros join a stream's tensor only as "
            "the causal padding of one [B, C, T] sequence before a Conv1d"
        )
    value = values[0]
    x = call.tensor(value.x if isinstance(value, TimePadded) else value)
    axis, dims = x.axis(dim), call.writer.dims(x)
    if x.axes[axis] != TIME or axis != len(x.axes) - 1:
        where = "the time axis, which is not last" if x.axes[axis] == TIME else axis_name(x.axes[axis])
        raise call.refuse(
            f"joins zeros with {x.describe()} along {where}; zeros join a stream's tensor only on the time axis of "
            "a [B, C, T] sequence, as the causal padding before a Conv1d"
        )
    steps, after = [0, 0], False
    for zeros in items:
        if zeros is value:
            after = True
            continue
        size = zeros.dims[axis] if len(zeros.dims) == len(dims) else None
        others = [(a, b) for k, (a, b) in enumerate(zip(zeros.dims, dims, strict=False)) if k != axis]
        if not isinstance(size, int) or any(a != b for a, b in others):
            raise call.refuse(
                f"joins zeros of size {zeros.dims} with {x.describe()} of size {dims}: they must have its size on "
                "every axis but time (the batch as x.size(0)), and a number of steps"
            )
        steps[after] += size
    return _padded(call, value, steps[0], steps[1], 0)


def _kernel(call: Call, module: Any, channels: int) -> FloatArray:
    """``K (k, I, O)`` from ``weight (O, I/groups, k)``; grouped channels become a block-diagonal kernel."""
    units, g, k = module.out_channels, module.groups, module.kernel_size[0]
    if channels != module.in_channels:
        raise call.refuse(f"takes {module.in_channels} channels, its input has {channels}")
    W = weight(call, module, "weight", (units, channels // g, k))  # (O, I/g, k)
    K = np.zeros((k, channels, units), np.float32)  # (k, I, O)
    I_g, O_g = channels // g, units // g
    for n in range(g):
        K[:, n * I_g : (n + 1) * I_g, n * O_g : (n + 1) * O_g] = W[n * O_g : (n + 1) * O_g].transpose(2, 1, 0)
    return K


def _check_window(call: Call, module: Any, left: int) -> None:
    """The convolution must see exactly ``(k-1)·d`` steps of padding before the first step."""
    stride, d, k = module.stride[0], module.dilation[0], module.kernel_size[0]
    if stride != 1:
        raise call.refuse(
            f"stride={stride} gives one output every {stride} steps: it changes the step rate, which a stream "
            "(one output per input step) cannot"
        )
    if module.padding_mode != "zeros":
        raise call.refuse(f"padding_mode={module.padding_mode!r} fills the padding from the sequence; {_ZEROS}")
    past = (k - 1) * d
    if left < past:
        raise call.refuse(
            f"is not causal: its window spans (k-1)·d = {past} past steps but it is padded by {left} at the start, "
            f"so each output reads {past - left} future steps; pad the start by exactly {past} (F.pad(x, ({past}, "
            "0))) or chomp a symmetric padding"
        )
    if left > past:
        raise call.refuse(
            f"is padded by {left} at the start, more than its window's (k-1)·d = {past} past steps: it adds "
            f"{left - past} outputs before the first step, shifting the time axis; pad the start by exactly {past}"
        )


def conv1d(call: Call, module: Any) -> Tensor | Unchomped:
    """``nn.Conv1d`` on a ``[B, C, T]`` sequence, padded before it and/or by its own ``padding``."""
    value = call.arg(0, "input")
    x, left, right = (value.x, value.left, value.right) if isinstance(value, TimePadded) else (value, 0, 0)
    x = call.tensor(x)
    if x.axes != (BATCH, FEATURE, TIME):
        raise call.refuse(
            f"convolves the last axis of {x.describe()}, which is not time after channels: Conv1d takes "
            f"[B, C, T]; transpose a [B, T, C] sequence first (x.transpose(1, 2)), or {_DECLARE}"
        )
    k, d = module.kernel_size[0], module.dilation[0]
    if isinstance(module.padding, str):  # "valid": none; "same": (k-1)·d split, the larger part at the end
        total = (k - 1) * d if module.padding == "same" else 0
        own = (total // 2, total - total // 2)
    else:
        own = (int(module.padding[0]), int(module.padding[0]))
    left, right = left + own[0], right + own[1]
    _check_window(call, module, left)
    K = _kernel(call, module, int(call.writer.dims(x)[1]))
    b = weight(call, module, "bias", (module.out_channels,)) if module.bias is not None else None
    (y,) = call.add(CausalConv1D(call.layer_name(), K=K, b=b, dilation=d, activation="linear"), [x])
    out = Tensor(y, x.axes)
    return Unchomped(out, right, call.what) if right else out


def chomp(call: Call, value: Unchomped, index: Any) -> Tensor:
    """``y[:, :, :-extra]`` (or ``y[..., :-extra]``) of an :class:`Unchomped` convolution: the causal output."""
    items = index if isinstance(index, tuple) else (index,)
    if items and items[0] is Ellipsis:
        items = (slice(None),) * (len(value.y.axes) - len(items) + 1) + items[1:]
    wanted = (slice(None), slice(None), slice(None, -value.extra, None))
    if items not in (wanted, (*wanted[:2], slice(0, -value.extra, None))):
        raise call.refuse(
            f"takes {index!r} of the output of {value.what}, which has {value.extra} steps of padding at the end; "
            f"only the chomp [:, :, :-{value.extra}] that drops them streams (a causal convolution)"
        )
    chomped: Tensor = value.y
    return chomped
