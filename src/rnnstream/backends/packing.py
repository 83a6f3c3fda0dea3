"""Weights laid out for the fused kernel (``_fused.c``): panels of 4 slots of ``lanes`` columns.

A panel holds, for every input row ``k`` of ``[x features, h features]``, 4 vectors of ``lanes``
floats, so the kernel reads each panel front to back: ``packed[p, k, slot, lane]``.

- LSTM: slot = gate (i, f, g, o), lane = unit ``p·lanes + lane``: one panel yields whole units.
- GRU (reset after): slots z, r, n_x, n_h; ``n_x`` has zeros in the h rows and ``n_h`` in the x rows,
  so the candidate's two halves stay apart (``n = tanh(n_x + r·n_h)``).
- Dense / SimpleRNN: slot ``s`` holds units ``(4p + s)·lanes + lane``.

bfloat16 weights (:func:`bf16_pairs`) keep this order, but within each pair of slots (0, 1) and (2, 3)
the two slots' values of one lane sit side by side: one 32-bit word per lane, the first slot's value in
its low half. The kernel widens a pair with a shift and a mask. For the AVX512_BF16 path
(:func:`bf16_dot_pairs`) the pairs are of rows instead: row ``2i`` and ``2i + 1`` of one slot and lane share
a word, the x rows and the h rows each padded to an even count with zeros. int8 weights (:func:`int8_quads`)
come in quads of rows likewise, with each column's scales and sums beside them.

>>> import numpy as np
>>> packed = pack_act(np.arange(6, dtype=np.float32).reshape(2, 3), None, lanes=4)
>>> packed.weights.shape, packed.panels, packed.units
((32,), 1, 3)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rnnstream.precision import bf16_bits, int8_columns
from rnnstream.types import FloatArray

EPI_ACT, EPI_LSTM, EPI_GRU = 0, 1, 2
ACTIVATIONS = {"linear": 0, "tanh": 1, "sigmoid": 2, "relu": 3}
"""Activations the kernel computes itself; any other runs in NumPy after a linear kernel."""


@dataclass(frozen=True)
class Packed:
    """One layer's weights in kernel order, and the sizes the kernel needs with them."""

    epilogue: int
    activation: int
    weights: FloatArray  # (P·K·4·lanes,)
    bias: FloatArray  # (P·4·lanes,)
    panels: int
    k_x: int
    k_h: int
    units: int


def _panels(w: FloatArray, lanes: int) -> FloatArray:
    """``w (K, 4, P·lanes)`` → flat ``(P, K, 4, lanes)``."""
    K, slots, width = w.shape
    w = w.reshape(K, slots, width // lanes, lanes).transpose(2, 0, 1, 3)
    return np.ascontiguousarray(w, dtype=np.float32).reshape(-1)


def _pad(w: FloatArray, width: int) -> FloatArray:
    """Zero-pad the last axis to ``width``."""
    return np.pad(w, [(0, 0)] * (w.ndim - 1) + [(0, width - w.shape[-1])])


def pack_lstm(Wx: FloatArray, Wh: FloatArray, b: FloatArray, *, lanes: int) -> Packed:
    """``Wx (I, 4H)``, ``Wh (H, 4H)``, ``b (4H,)`` in gate order i, f, g, o."""
    H = Wh.shape[0]
    W = np.concatenate([Wx, Wh]).reshape(-1, 4, H)  # (K, gate, unit)
    return _gated(EPI_LSTM, W, b.reshape(1, 4, H), Wx.shape[0], lanes)


def pack_gru(Wx: FloatArray, Wh: FloatArray, bx: FloatArray, bh: FloatArray, *, lanes: int) -> Packed:
    """A reset-after GRU: ``Wx (I, 3H)``, ``Wh (H, 3H)``, biases ``(3H,)`` in gate order z, r, n."""
    features, H = Wx.shape[0], Wh.shape[0]
    x_gates, h_gates = Wx.reshape(features, 3, H), Wh.reshape(H, 3, H)
    zr = np.concatenate([x_gates[:, :2], h_gates[:, :2]])  # (K, 2, H): z and r sum both halves
    n_x = np.concatenate([x_gates[:, 2], np.zeros((H, H), np.float32)])  # (K, H)
    n_h = np.concatenate([np.zeros((features, H), np.float32), h_gates[:, 2]])  # (K, H)
    W = np.concatenate([zr, n_x[:, None], n_h[:, None]], axis=1)  # (K, 4, H)
    bx3, bh3 = bx.reshape(3, H), bh.reshape(3, H)
    bias = np.stack([bx3[0] + bh3[0], bx3[1] + bh3[1], bx3[2], bh3[2]])[None]  # (1, 4, H)
    return _gated(EPI_GRU, W, bias, features, lanes)


def _gated(epilogue: int, W: FloatArray, bias: FloatArray, features: int, lanes: int) -> Packed:
    """A gated cell whose 4 slots each hold ``lanes`` units: ``W (K, 4, H)``, ``bias (1, 4, H)``."""
    H = W.shape[2]
    panels = -(-H // lanes)
    width = panels * lanes
    return Packed(
        epilogue, ACTIVATIONS["linear"], _panels(_pad(W, width), lanes), _panels(_pad(bias, width), lanes),
        panels, features, H, H,
    )  # fmt: skip


def pack_act(
    W: FloatArray, b: FloatArray | None, *, lanes: int, Wh: FloatArray | None = None, activation: str = "linear"
) -> Packed:
    """Dense ``y = act(x W + b)``, or SimpleRNN ``h' = act(x W + h Wh + b)`` when ``Wh`` is given."""
    K_x, units = W.shape
    per_panel = 4 * lanes
    panels = -(-units // per_panel)
    full = W if Wh is None else np.concatenate([W, Wh])  # (K, units)
    bias = np.zeros((1, units), np.float32) if b is None else b[None]
    return Packed(
        EPI_ACT,
        ACTIVATIONS[activation],
        _slots_to_panels(_pad(full, panels * per_panel), lanes),
        _slots_to_panels(_pad(bias, panels * per_panel), lanes),
        panels,
        K_x,
        0 if Wh is None else Wh.shape[0],
        units,
    )


def _slots_to_panels(w: FloatArray, lanes: int) -> FloatArray:
    """``w (K, P·4·lanes)``, units in order → flat ``(P, K, 4, lanes)``."""
    K, width = w.shape
    w = w.reshape(K, width // (4 * lanes), 4, lanes).transpose(1, 0, 2, 3)
    return np.ascontiguousarray(w, dtype=np.float32).reshape(-1)


def bf16_pairs(weights: FloatArray, lanes: int) -> np.ndarray[tuple[int, ...], np.dtype[np.uint16]]:
    """Packed float32 weights ``(P·K·4·lanes,)`` as bfloat16 bits, each pair of slots interleaved lane by lane.

    >>> w = np.array([1, 2, 3, 4, 5, 6, 7, 8], np.float32)  # one k, 4 slots of 2 lanes
    >>> (bf16_pairs(w, lanes=2).astype(np.uint32) << 16).view(np.float32).tolist()
    [1.0, 3.0, 2.0, 4.0, 5.0, 7.0, 6.0, 8.0]
    """
    bits = bf16_bits(weights).reshape(-1, 2, 2, lanes)  # (P·K·2 pairs, slot in pair, lane)
    return np.ascontiguousarray(bits.transpose(0, 1, 3, 2)).reshape(-1)


DOT_CHUNK = 16
"""Row pairs of the bf16-dot weights come in whole chunks of this many (an AMX tile's: ``amx_kernel.h``)."""


def bf16_dot_pairs(
    weights: FloatArray, k_x: int, k_h: int, lanes: int
) -> np.ndarray[tuple[int, ...], np.dtype[np.uint16]]:
    """Packed float32 weights ``(P·K·4·lanes,)`` as bfloat16 bits in row pairs: ``(P, pairs, 4, lanes, 2)``,
    the x rows and the h rows each padded to an even count, then zero pairs up to a multiple of DOT_CHUNK
    (``dot_kernel.h``).

    >>> w = np.arange(1, 13, dtype=np.float32)  # k_x = 3 rows, 4 slots of 1 lane
    >>> (bf16_dot_pairs(w, 3, 0, lanes=1).astype(np.uint32) << 16).view(np.float32).tolist()[:16]
    [1.0, 5.0, 2.0, 6.0, 3.0, 7.0, 4.0, 8.0, 9.0, 0.0, 10.0, 0.0, 11.0, 0.0, 12.0, 0.0]
    """
    w = weights.reshape(-1, k_x + k_h, 4, lanes)
    parts = [np.pad(part, [(0, 0), (0, part.shape[1] % 2), (0, 0), (0, 0)]) for part in (w[:, :k_x], w[:, k_x:])]
    rows = sum(part.shape[1] for part in parts)
    parts.append(np.zeros((w.shape[0], -rows % (2 * DOT_CHUNK), 4, lanes), np.float32))
    paired = np.concatenate(parts, axis=1).reshape(w.shape[0], -1, 2, 4, lanes).transpose(0, 1, 3, 4, 2)
    return bf16_bits(np.ascontiguousarray(paired)).reshape(-1)


INT8_MAX_INPUTS = 133_000
"""The most inputs of one part (x or h) the kernel sums in int32 at int8 (``127² · K < 2^31``: kernel.h's
INT8_MAX_ROWS); a layer with more runs its NumPy step."""


def int8_quads(
    weights: FloatArray, k_x: int, k_h: int, lanes: int
) -> tuple[np.ndarray[tuple[int, ...], np.dtype[np.int8]], np.ndarray[tuple[int, ...], np.dtype[np.int32]]]:
    """Packed float32 weights ``(P·K·4·lanes,)`` as int8 in row quads, and their ``quant`` words (the
    layout: ``int8_kernel.h``).

    Each column of the x rows and of the h rows is quantized on its own (:func:`rnnstream.precision.int8_columns`:
    weights already at precision int8 come back as they are). The int8 values are ``(P, quads, 4, lanes, 4)``,
    each part padded with zero rows to whole quads; ``quant`` is ``(P, 4, 4, lanes)``: the x part's and the h
    part's column scales (float32 bits), then ``-128·Σ q`` over each part's rows (what ``vpdpbusd``'s unsigned
    rows add; the AVX2 path, whose rows are signed, does not read them: see ``int8_kernel.h``).

    >>> w = np.array([2, 0, 0, 0, -1, 0, 0, 0], np.float32)  # k_x = 2 rows, 4 slots of 1 lane
    >>> q, quant = int8_quads(w, 2, 0, lanes=1)
    >>> q.reshape(-1, 4)[0].tolist(), quant[0].view(np.float32) * 127, quant[8:10].tolist()
    ([127, -64, 0, 0], np.float32(2.0), [-8064, 0])
    """
    w = weights.reshape(-1, k_x + k_h, 4, lanes)
    parts, scales, sums = [], [], []
    for part in (w[:, :k_x], w[:, k_x:]):
        q, scale = int8_columns(part, axis=1)  # per (panel, slot, lane): a column of Wx or of Wh
        parts.append(np.pad(q, [(0, 0), (0, -part.shape[1] % 4), (0, 0), (0, 0)]))
        scales.append(scale.view(np.int32))
        sums.append(-128 * q.astype(np.int32).sum(axis=1))
    quads = np.concatenate(parts, axis=1).reshape(w.shape[0], -1, 4, 4, lanes).transpose(0, 1, 3, 4, 2)
    quant = np.stack(scales + sums, axis=1)  # (P, 4, 4, lanes)
    return np.ascontiguousarray(quads).reshape(-1), np.ascontiguousarray(quant, np.int32).reshape(-1)
