"""Weight precision: ``fp32`` (as trained), or bfloat16 weight matrices in one of two modes.

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
fp32 over 10,000 steps of the bundled models, in both modes.

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

PRECISIONS = ("fp32", "bf16", "bf16-widen", "bf16-dot")


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


MATRICES = {"W", "Wx", "Wh"}
"""The weights a bf16 precision rounds, of Dense and recurrent layers."""


def at_precision(graph: Graph, precision: str) -> Graph:
    """``graph`` with its weights at ``precision``: the same graph for ``fp32``; for ``bf16`` and
    ``bf16-widen`` a copy whose Dense and recurrent layers hold their weight matrices rounded to bfloat16
    (other layers shared); for ``bf16-dot`` those matrices are :class:`Bf16Operand` arrays besides."""
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
                    matrix = round_bf16(value)
                    setattr(twin, name, matrix.view(Bf16Operand) if precision == "bf16-dot" else matrix)
            rounded[id(layer)] = twin
        nodes.append(dataclasses.replace(node, layer=rounded.get(id(layer), layer)))
    return dataclasses.replace(graph, nodes=tuple(nodes))
