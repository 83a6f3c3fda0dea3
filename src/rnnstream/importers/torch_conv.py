"""Temporal convolutional networks (TCN) as PyTorch writes them → :class:`~rnnstream.layers.conv.CausalConv1D`.

A TCN convolves ``[B, C, T]`` (time last, usually ``x.transpose(1, 2)`` of a ``[B, T, C]`` input) and makes
``nn.Conv1d(k, dilation=d)`` causal in one of three ways, all read here:

- ``F.pad(x, ((k-1)·d, 0))`` then the convolution,
- ``nn.ConstantPad1d(((k-1)·d, 0), 0)`` (or ``nn.ZeroPad1d``) then the convolution,
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

from rnnstream.importers.axes import BATCH, FEATURE, TIME, Tensor, axis_name
from rnnstream.importers.causal_padding import TimePadded, Unchomped
from rnnstream.importers.torch_call import Call, weight
from rnnstream.layers.conv import CausalConv1D
from rnnstream.types import FloatArray

_ZEROS = "a stream starts a convolution's past at zeros, so only zero padding streams"


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
            "sequence can be padded, before a Conv1d"
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
            "[B, C, T]; transpose a [B, T, C] sequence first (x.transpose(1, 2))"
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
