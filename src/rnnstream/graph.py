"""The DAG a StreamModel steps: inputs, nodes in topological order, outputs, and the state layout.

A *node* is one call of a layer (a layer shared by two calls gives two nodes, each with its own
state). Tensors are numbered; ``specs`` says what each one is at one step.

>>> import numpy as np
>>> from rnnstream.layers.dense import Dense
>>> g = GraphBuilder()
>>> x = g.add_input("x", TensorSpec((3,)))
>>> (y,) = g.add_node("dense", Dense("dense", W=np.ones((3, 2), np.float32), b=None, activation="relu"), [x])
>>> graph = g.build([y], ["dense"])
>>> graph.specs[y].describe(), graph.state_size
('(B, T, 2)', 0)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rnnstream.errors import UnsupportedLayerError
from rnnstream.layers.layer import Layer, StateSlice, TensorSpec


@dataclass(frozen=True)
class InputSpec:
    """A model input: its name, what one step of it looks like, and its tensor id."""

    name: str
    spec: TensorSpec
    tensor: int


IMPLICIT_MASK = -1
"""``Node.mask`` value: the mask comes from the inputs, by the layer's own rule (``combine_masks``)."""
NO_MASK = -2
"""``Node.mask`` value: the call was explicitly given no mask."""


@dataclass(frozen=True)
class Node:
    """One call of ``layer`` on tensors ``inputs``, producing ``outputs``; owns state columns [start, stop).

    ``mask`` is a tensor id when Keras passed a mask tensor explicitly, else IMPLICIT_MASK or NO_MASK.
    """

    name: str
    layer: Layer
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    start: int
    stop: int
    mask: int = IMPLICIT_MASK


@dataclass(frozen=True)
class Graph:
    inputs: tuple[InputSpec, ...]
    nodes: tuple[Node, ...]
    outputs: tuple[int, ...]
    output_names: tuple[str, ...]
    specs: dict[int, TensorSpec]
    state_size: int

    @property
    def state_layout(self) -> list[StateSlice]:
        """Which columns of a state row hold which part of which layer."""
        slices = []
        for node in self.nodes:
            start = node.start
            for part, size in node.layer.state_parts:
                slices.append(StateSlice(node.name, part, start, start + size))
                start += size
        return slices


@dataclass
class GraphBuilder:
    """Grows a Graph one input and one node at a time; checks every wiring as it goes."""

    _inputs: list[InputSpec] = field(default_factory=list)
    _nodes: list[Node] = field(default_factory=list)
    _specs: dict[int, TensorSpec] = field(default_factory=dict)
    _state_size: int = 0

    def _new_tensor(self, spec: TensorSpec) -> int:
        tensor = len(self._specs)
        self._specs[tensor] = spec
        return tensor

    def spec(self, tensor: int) -> TensorSpec:
        return self._specs[tensor]

    def add_input(self, name: str, spec: TensorSpec) -> int:
        tensor = self._new_tensor(spec)
        self._inputs.append(InputSpec(name, spec, tensor))
        return tensor

    def add_node(self, name: str, layer: Layer, inputs: list[int], mask: int = IMPLICIT_MASK) -> list[int]:
        """Wire ``layer`` to ``inputs`` (and a mask tensor, if given); return its output tensor ids."""
        if mask >= 0 and (self._specs[mask].dtype != "bool" or self._specs[mask].shape != ()):
            raise UnsupportedLayerError(
                f"layer {name!r} is given a mask of {self._specs[mask].describe()}; "
                "a mask must be one boolean per stream and step"
            )
        out_specs = layer.output_specs([self._specs[t] for t in inputs])
        outputs = [self._new_tensor(spec) for spec in out_specs]
        start = self._state_size
        self._state_size += layer.state_size
        self._nodes.append(Node(name, layer, tuple(inputs), tuple(outputs), start, self._state_size, mask))
        return outputs

    def build(self, outputs: list[int], output_names: list[str]) -> Graph:
        if not outputs:
            raise UnsupportedLayerError("the model has no outputs")
        return Graph(
            inputs=tuple(self._inputs),
            nodes=tuple(self._nodes),
            outputs=tuple(outputs),
            output_names=tuple(output_names),
            specs=dict(self._specs),
            state_size=self._state_size,
        )
