"""Weight precision: ``fp32`` (as trained), bfloat16 weight matrices in one of two modes, or int8 ones.

With a bf16 precision the weight matrices of Dense, SimpleRNN, LSTM and GRU layers (``W``, ``Wx``,
``Wh``) are rounded to the nearest bfloat16 (round half to even: 8 significant bits, float32's range);
biases, embeddings, other layers' weights and the state stay float32, and every product is summed in
float32. The two modes differ in the other operand of each weight product, the layer's input and h rows:

- ``bf16-widen``: kept float32. The fused kernel keeps the matrices as 16-bit values and widens them as it
  loads them (half the bytes to read: a small batch's step is bound by reading its weights); the NumPy
  and torch backends compute on the same rounded values held as float32 (the oracle of that step).
- ``bf16-dot``: rounded to bfloat16 as well, so that the fused kernel multiplies bfloat16 pairs with
  AVX512_BF16's ``vdpbf16ps`` (twice the products per instruction; CPUs with AVX512_BF16 only). The NumPy
  backend emulates it (:class:`Bf16Operand`: the rows entering each product rounded the same way); torch
  does not compute it.
- ``bf16``: for the fused kernel, ``bf16-dot`` where it is the faster — AMX tiles (Intel Sapphire Rapids
  and later) or an AMD CPU's ``vdpbf16ps`` (Zen 4 and later: 1.9x fp32's throughput at batch 256) — else
  ``bf16-widen`` (a Sapphire Rapids Xeon without AMX ran ``vdpbf16ps`` at half FMA's products per second);
  ``RNNSTREAM_BF16=widen|dot`` decides instead (``rnnstream.backends.concrete_precision``).

Rounding a weight changes it by at most 2^-9 of its size (0.2%); how far outputs move depends on the
model; rounding the rows too moves them further. ``docs/backends.md`` has the measured difference from
fp32 over 10,000 steps of the bundled models, in every mode.

``int8``: the same matrices quantized per output column (:func:`int8_columns`: 255 steps of
``max |column| / 127``, 0.4% of the column's largest weight), and each row that enters a product quantized
at every step by its own scale (:func:`int8_rows`: ``max |row| / 127``; the x and the h of a recurrent
layer each on their own); the products are summed exactly (int32 in the fused kernel, which needs
AVX512_VNNI's ``vpdpbusd`` or AVX2's ``vpmaddubsw``) and scaled back to float32. The NumPy backend emulates it
(:class:`Int8Operand`); torch does not compute it.

>>> import numpy as np
>>> round_bf16(np.array([1.0, 1.00390625, 1.005859375, 3.14159265], np.float32)).tolist()
[1.0, 1.0, 1.0078125, 3.140625]
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import numpy as np

from rnnstream.errors import InputError
from rnnstream.graph import Graph
from rnnstream.layers.dense import Dense
from rnnstream.layers.layer import Layer
from rnnstream.layers.recurrent import Recurrent
from rnnstream.types import FloatArray

PRECISIONS = ("fp32", "bf16", "bf16-widen", "bf16-dot", "int8")


def check_precision(precision: str) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else an InputError naming them."""
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    return precision


def round_bf16(a: FloatArray) -> FloatArray:
    """``a`` rounded to the nearest bfloat16 (ties to even), as float32 values."""
    a = np.ascontiguousarray(a, np.float32)
    bits = a.view(np.uint32)
    rounded = (bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) & np.uint32(0xFFFF0000)
    return np.where(np.isnan(a), a, rounded.view(np.float32))  # a NaN's low bits must not carry into its sign


def bf16_bits(a: FloatArray) -> np.ndarray[tuple[int, ...], np.dtype[np.uint16]]:
    """The bfloat16 bits (the high 16 bits of each float32) of ``round_bf16(a)``."""
    return (round_bf16(a).view(np.uint32) >> np.uint32(16)).astype(np.uint16)


class Bf16Operand(np.ndarray[tuple[int, ...], np.dtype[np.float32]]):
    """A weight matrix at ``bf16-dot``: ``a @ w`` (and ``w @ a``) rounds ``a`` to bfloat16 first and sums the
    products in float32, as AVX512_BF16's ``vdpbf16ps`` does (in another order); every other operation sees
    a plain float32 array and returns one.

    >>> w = round_bf16(np.array([[1.0], [1.0]], np.float32)).view(Bf16Operand)
    >>> (np.array([[1.001, 3.14159]], np.float32) @ w).tolist()
    [[4.140625]]
    """

    def __array_ufunc__(self, ufunc: np.ufunc, method: str, *inputs: Any, **kwargs: Any) -> Any:
        plain = [np.asarray(a).view(np.ndarray) if isinstance(a, Bf16Operand) else a for a in inputs]
        if ufunc is np.matmul and method == "__call__":
            weights = [isinstance(a, Bf16Operand) for a in inputs]
            plain = [a if weight else round_bf16(np.asarray(a)) for a, weight in zip(plain, weights, strict=True)]
        return getattr(ufunc, method)(*plain, **kwargs)


Int8Array = np.ndarray[tuple[int, ...], np.dtype[np.int8]]


def int8_columns(w: FloatArray, axis: int = 0) -> tuple[Int8Array, FloatArray]:
    """``w`` quantized per column (every index but ``axis``, along which the scale is shared): ``(q, scale)``
    with ``w ≈ q · scale``, ``q = round(w / scale)`` in [-127, 127] and ``scale = max |w| / 127`` along
    ``axis`` (that axis dropped; 0 for a column of zeros). Quantizing ``q · scale`` again gives ``q`` back.

    >>> q, scale = int8_columns(np.array([[1.0, 0.5], [-0.25, 0.0]], np.float32))
    >>> q.tolist(), (scale * 127).tolist()
    ([[127, 127], [-32, 0]], [1.0, 0.5])
    """
    w = np.asarray(w, np.float32)
    scale = np.max(np.abs(w), axis=axis, initial=np.float32(0)) / np.float32(127)
    kept = np.expand_dims(scale, axis)
    q = np.rint(np.divide(w, kept, out=np.zeros_like(w), where=kept > 0))
    return np.clip(q, -127, 127).astype(np.int8), scale.astype(np.float32)


def int8_rows(a: FloatArray, axis: int = -1) -> tuple[FloatArray, FloatArray]:
    """``a`` quantized along ``axis`` at the step (each row on its own, as the fused kernel does it):
    ``(q, scale)``, ``q = rint(a · (127 / max |a|))`` (float32 values in [-127, 127], ties to even) and
    ``scale = max |a| / 127`` (``axis`` kept, of length 1); a row holding inf or NaN has the scale NaN; a row
    of zeros, or of values so small that ``127 / max |a|`` overflows float32 (below 3.7e-37), is zeros, its
    scale 0.

    >>> q, scale = int8_rows(np.array([[2.0, -1.0, 0.01]], np.float32))
    >>> q.tolist(), (scale * 127).tolist()
    ([[127.0, -64.0, 1.0]], [[2.0]])
    """
    a = np.asarray(a, np.float32)
    most = np.max(np.abs(a), axis=axis, keepdims=True, initial=np.float32(0))
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        inverse = np.float32(127) / most  # inf for a row of zeros or tiny values, NaN for one holding NaN
    usable = np.isfinite(inverse)
    scale = np.where(usable, most / np.float32(127), np.float32(0))
    scale = np.where(np.isfinite(most), scale, np.float32(np.nan)).astype(np.float32)
    with np.errstate(invalid="ignore"):  # inf · 0: NaN, as the row's scale
        return np.rint(a * np.where(usable, inverse, np.float32(0))), scale


class Int8Operand(np.ndarray[tuple[int, ...], np.dtype[np.float32]]):
    """A weight matrix at ``int8``, holding ``q · scale`` (:func:`int8_columns`): ``a @ w`` quantizes each row
    of ``a`` first (:func:`int8_rows`) and sums the products in float64 (the fused kernel sums the integers exactly
    in int32 and scales back once: the two agree to float32 roundings, ~1e-7 of the value);
    every other operation sees a plain float32 array and returns one.

    >>> w = np.array([[1.0], [1.0]], np.float32).view(Int8Operand)
    >>> y = np.array([[1.0, 0.1]], np.float32) @ w  # the row as 127 and 13 steps of 1/127
    >>> bool(y[0, 0] == np.float32(140 / 127))
    True
    """

    def __array_ufunc__(self, ufunc: np.ufunc, method: str, *inputs: Any, **kwargs: Any) -> Any:
        plain = [np.asarray(a).view(np.ndarray) if isinstance(a, Int8Operand) else a for a in inputs]
        if ufunc is not np.matmul or method != "__call__" or kwargs:
            return getattr(ufunc, method)(*plain, **kwargs)
        left, right = plain
        if isinstance(inputs[1], Int8Operand):  # rows @ w: each row of the left operand quantized
            q, scale = int8_rows(left, axis=-1)
            return ((q.astype(np.float64) @ right.astype(np.float64)) * scale).astype(np.float32)
        q, scale = int8_rows(right, axis=-2)  # w @ columns
        return ((left.astype(np.float64) @ q.astype(np.float64)) * scale).astype(np.float32)


def at_int8(w: FloatArray) -> Int8Operand:
    """``w`` at precision ``int8``: each column quantized (:func:`int8_columns`), as an :class:`Int8Operand`."""
    q, scale = int8_columns(w)
    return (q.astype(np.float32) * scale).view(Int8Operand)


MATRICES = {"W", "Wx", "Wh"}
"""The weights a bf16 precision rounds, of Dense and recurrent layers."""


def at_precision(graph: Graph, precision: str) -> Graph:
    """``graph`` with its weights at ``precision``: the same graph for ``fp32``; for ``bf16`` and
    ``bf16-widen`` a copy whose Dense and recurrent layers hold their weight matrices rounded to bfloat16
    (other layers shared); for ``bf16-dot`` those matrices are :class:`Bf16Operand` arrays besides; for
    ``int8`` they are quantized, as :class:`Int8Operand` arrays."""
    if check_precision(precision) == "fp32":
        return graph
    rounded: dict[int, Layer] = {}
    nodes = []
    for node in graph.nodes:
        layer = node.layer
        if isinstance(layer, Dense | Recurrent) and id(layer) not in rounded:
            twin = copy.copy(layer)
            for name, value in layer.params().items():
                if name in MATRICES:
                    setattr(twin, name, _matrix_at(value, precision))
            rounded[id(layer)] = twin
        nodes.append(dataclasses.replace(node, layer=rounded.get(id(layer), layer)))
    return dataclasses.replace(graph, nodes=tuple(nodes))


def _matrix_at(w: FloatArray, precision: str) -> FloatArray:
    """One weight matrix at a precision other than fp32."""
    if precision == "int8":
        return at_int8(w)
    rounded = round_bf16(w)
    return rounded.view(Bf16Operand) if precision == "bf16-dot" else rounded
