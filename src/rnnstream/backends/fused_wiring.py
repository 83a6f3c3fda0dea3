"""Where each tensor of a one-call step lives: the wiring of the fused kernel's ``step_all``, ``bind`` and
``launch`` paths.

A graph whose every node the kernel steps (Identity layers aside) runs as one C call over a tuple of items
``(plan, x, out)``, one per node: ``x`` is the node's input rows (None: the kernel reads them in place from
the new state's columns, where the previous recurrent node wrote its h), ``out`` a Dense node's own output
array (None: a recurrent node writes into the new state). :func:`wire` works out once, from the graph,
where each node's input and each graph output come from. ``model.step`` hands that to the kernel once
(:meth:`Wiring.for_kernel`, ``wired_step.c``), which then allocates a step's new arrays and runs it in one
call; ``launch``, ``bind`` and inputs the kernel does not take as they are fill in the tuple here
(:meth:`Wiring.items`).

A place is a source index (the step's inputs, then the Dense nodes' outputs, in order) or a ``slice`` of
the new state's columns.

>>> import numpy as np, rnnstream
>>> m = rnnstream.load(rnnstream.demo.SEED_MODEL, backend="fused")
>>> wiring = m.backend.wiring
>>> items, outputs = wiring.items([np.ones((2, 4), np.float32)], np.zeros((2, m.state_size), np.float32))
>>> [x is None for _, x, _ in items], [out is None for _, _, out in items], outputs[0].shape
([False, True, True], [True, True, False], (2, 1))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from rnnstream.backends import packing
from rnnstream.graph import Graph, Node
from rnnstream.layers.dense import Dense, Identity
from rnnstream.layers.recurrent import Recurrent
from rnnstream.types import Array, FloatArray

Place = int | slice
"""A source index (inputs, then Dense outputs), or the new state's columns."""

Item = tuple[object, FloatArray | None, FloatArray | None]
"""One node's (plan, x or None, out or None), as ``_fused.step_all`` takes it."""


@dataclass(frozen=True)
class Wiring:
    """A one-call step's nodes (plan, where x is or None, which Dense output or -1) and outputs' places."""

    nodes: tuple[tuple[object, Place | None, int], ...]
    dense_units: tuple[int, ...]
    inputs: int
    outputs: tuple[Place, ...]

    def items(self, xs: list[Array], new_state: FloatArray) -> tuple[tuple[Item, ...], list[FloatArray]]:
        """The kernel's items for one step over ``xs`` into ``new_state`` (new Dense output arrays), and
        the arrays that will hold the graph's outputs."""
        batch = new_state.shape[0]
        outs = [np.empty((batch, units), np.float32) for units in self.dense_units]
        sources = [*map(rows, xs), *outs]
        items: list[Item] = []
        for plan, place, out in self.nodes:
            x = None if place is None else sources[place] if type(place) is int else new_state[:, place]
            items.append((plan, x, outs[out] if out >= 0 else None))
        return tuple(items), [sources[p] if type(p) is int else new_state[:, p] for p in self.outputs]

    def for_kernel(self) -> tuple[tuple[tuple[object, Any, int], ...], tuple[int, ...], int, tuple[Any, ...]]:
        """The arguments of the kernel's ``wire`` (``wired_step.c``): each slice as a ``(lo, hi)`` pair."""

        def pair(place: Place | None) -> int | tuple[int, int] | None:
            return (place.start, place.stop) if isinstance(place, slice) else place

        nodes = tuple((plan, pair(place), out) for plan, place, out in self.nodes)
        return nodes, self.dense_units, self.inputs, tuple(pair(place) for place in self.outputs)


def wire(graph: Graph, plans: dict[int, tuple[object, Recurrent | Dense]], in_state: dict[int, int]) -> Wiring | None:
    """The wiring of ``graph``'s one-call step, or None when a node is not the kernel's to step. ``plans``:
    the kernel's plan of each node it steps, by ``id(node)``; ``in_state``: the tensors a node reads in place
    from the new state (a recurrent node's h, by tensor id)."""
    where: dict[int, Place] = {spec.tensor: i for i, spec in enumerate(graph.inputs)}
    nodes: list[tuple[object, Place | None, int]] = []
    dense_units: list[int] = []
    for node in graph.nodes:
        if isinstance(node.layer, Identity):  # its output is its input
            where[node.outputs[0]] = where[node.inputs[0]]
            continue
        found = plans.get(id(node))
        if found is None:
            return None
        plan, layer = found
        x = None if node.inputs[0] in in_state else where[node.inputs[0]]
        if isinstance(layer, Dense):
            if packing.ACTIVATIONS.get(layer.activation_name) is None:
                return None  # applied in NumPy after the kernel
            where[node.outputs[0]] = len(graph.inputs) + len(dense_units)
            nodes.append((plan, x, len(dense_units)))
            dense_units.append(int(layer.W.shape[1]))
        else:
            nodes.append((plan, x, -1))
            where.update({tensor: slice(lo, hi) for tensor, lo, hi in columns(node, layer.units)})
    return Wiring(tuple(nodes), tuple(dense_units), len(graph.inputs), tuple(where[t] for t in graph.outputs))


def columns(node: Node, units: int) -> list[tuple[int, int, int]]:
    """Output k of a recurrent node is its h for k = 0, then its state parts (h, c) with return_state."""
    firsts = [node.start, *(node.start + units * k for k in range(len(node.outputs) - 1))]
    return [(tensor, first, first + units) for tensor, first in zip(node.outputs, firsts, strict=True)]


def rows(a: Array) -> FloatArray:
    """``a`` as float32 ``(B, F)`` with contiguous rows, copied only when it is not already."""
    if a.dtype == np.float32 and a.ndim == 2 and a.strides[1] == 4:
        return a
    return np.ascontiguousarray(a, dtype=np.float32).reshape(a.shape[0], int(np.prod(a.shape[1:])))  # 0 rows too
