"""Weight precision: ``fp32`` (as trained) or ``bf16`` (bfloat16 weight matrices, float32 arithmetic).

With ``precision="bf16"`` the weight matrices of Dense, SimpleRNN, LSTM and GRU layers (``W``, ``Wx``,
``Wh``) are rounded to the nearest bfloat16 (round half to even: 8 significant bits, float32's range);
biases, embeddings, other layers' weights and the state stay float32, and every product is summed in
float32. The fused kernel keeps those matrices as 16-bit values and widens them as it loads them (half
the bytes to read: a small batch's step is bound by reading its weights); the NumPy and torch backends
compute on the same rounded values held as float32 (the oracle of the fused kernel's bf16 step, without
the memory saving).

Rounding a weight changes it by at most 2^-9 of its size (0.2%); how far outputs move depends on the
model. ``docs/backends.md`` has the measured difference from fp32 over 10,000 steps of the bundled models.

>>> import numpy as np
>>> round_bf16(np.array([1.0, 1.00390625, 1.005859375, 3.14159265], np.float32)).tolist()
[1.0, 1.0, 1.0078125, 3.140625]
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np

from rnnstream.errors import InputError
from rnnstream.graph import Graph
from rnnstream.layers.dense import Dense
from rnnstream.layers.layer import Layer
from rnnstream.layers.recurrent import Recurrent
from rnnstream.types import FloatArray

PRECISIONS = ("fp32", "bf16")


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


MATRICES = {"W", "Wx", "Wh"}
"""The weights ``bf16`` rounds, of Dense and recurrent layers."""


def at_precision(graph: Graph, precision: str) -> Graph:
    """``graph`` with its weights at ``precision``: the same graph for ``fp32``; for ``bf16`` a copy whose
    Dense and recurrent layers hold their weight matrices rounded to bfloat16 (other layers shared)."""
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
                    setattr(twin, name, round_bf16(value))
            rounded[id(layer)] = twin
        nodes.append(dataclasses.replace(node, layer=rounded.get(id(layer), layer)))
    return dataclasses.replace(graph, nodes=tuple(nodes))
