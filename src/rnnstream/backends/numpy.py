"""The reference backend: walks the graph in topological order, one NumPy step per node.

It is the oracle every faster backend must agree with, so it stays plain: no fusion, no buffers
reused between calls, every layer's own ``step``.
"""

from __future__ import annotations

import numpy as np

from rnnstream.backends.backend import StepOnly
from rnnstream.graph import IMPLICIT_MASK, Graph, Node
from rnnstream.layers.layer import StepResult
from rnnstream.types import Array, BoolArray, FloatArray


class NumpyBackend(StepOnly):
    """Executes a Graph's step with each layer's NumPy ``step``, on the caller's thread."""

    name = "numpy"
    threads = 1

    def __init__(self, graph: Graph) -> None:
        self.graph = graph

    def step(self, xs: list[Array], state: FloatArray) -> tuple[list[FloatArray], FloatArray]:
        """``xs``: validated inputs ``[B, *features]``; ``state``: ``[B, S]`` → outputs, new state."""
        graph = self.graph
        values: dict[int, Array] = {spec.tensor: x for spec, x in zip(graph.inputs, xs, strict=True)}
        masks: dict[int, BoolArray | None] = dict.fromkeys(values)
        new_state = np.empty_like(state)  # (B, S): every column is written by its node below
        for node in graph.nodes:
            result = self.step_node(
                node, [values[t] for t in node.inputs], _mask_for(node, values, masks), state, new_state
            )
            # A faster backend may have written its columns in place already.
            if node.stop > node.start and result.state.base is not new_state:
                new_state[:, node.start : node.stop] = result.state
            for i, tensor in enumerate(node.outputs):
                values[tensor] = result.outputs[i]
                masks[tensor] = result.mask if i == 0 else None
        return [values[t] for t in graph.outputs], new_state

    def step_node(
        self, node: Node, inputs: list[Array], mask: BoolArray | None, state: FloatArray, new_state: FloatArray
    ) -> StepResult:
        """One node's step; ``new_state`` is where its columns go (the oracle leaves that to ``step``)."""
        return node.layer.step(inputs, mask, state[:, node.start : node.stop])


def _mask_for(node: Node, values: dict[int, Array], masks: dict[int, BoolArray | None]) -> BoolArray | None:
    if node.mask == IMPLICIT_MASK:
        return node.layer.combine_masks([masks[t] for t in node.inputs])
    return values[node.mask] if node.mask >= 0 else None
