"""How the PyTorch and ONNX importers see a framework's tensors: which axis is batch, time, or a feature.

A framework tensor holds a whole sequence with batch and time wherever the model put them
(``[B, T, F]`` or ``[T, B, F]``; ONNX's LSTM adds a directions axis: ``Y [T, 1, B, H]``). An
rnnstream tensor is one step, ``[B, *features]``. :class:`Tensor` pairs the two: an rnnstream tensor
id and the names of the framework tensor's axes, ``"B"`` (batch), ``"T"`` (time), ``"1"`` (a unit
axis the framework added) and ``"F"`` (the feature axes, in order). Glue such as transposes and
squeezes only renames axes (``"B*T"`` names batch and time flattened into one axis, which per-step
layers do not mind); taking the last time step adds a :class:`LastStep` node.

>>> Tensor(0, ("T", "1", "B", "F")).without(1).permuted((1, 0, 2)).axes
('B', 'T', 'F')
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from rnnstream.errors import UnsupportedLayerError
from rnnstream.graph import GraphBuilder
from rnnstream.layers.layer import Layer, TensorSpec
from rnnstream.layers.sequence import LastStep

BATCH, TIME, UNIT, FEATURE = "B", "T", "1", "F"
MERGED = ("B*T", "T*B")
"""Batch and time flattened into one axis (tf2onnx's Dense on a sequence: ``Reshape [B, T, F] → [B·T, F]``)."""

Dim = str | int
"""One dimension of a shape: ``"B"`` or ``"T"`` (known only at run time) or a number."""


class LayoutError(UnsupportedLayerError):
    """A recurrent layer gets time and batch in the other order than the one assumed for the model
    inputs; the importer then tries the other order."""


@dataclass(frozen=True)
class Tensor:
    """rnnstream tensor ``tensor``, laid out in the framework as ``axes``."""

    tensor: int
    axes: tuple[str, ...]

    @property
    def time_axis(self) -> int | None:
        return self.axes.index(TIME) if TIME in self.axes else None

    def describe(self) -> str:
        return "[" + ", ".join(self.axes) + "]"

    def axis(self, axis: int) -> int:
        """A framework axis, possibly negative, as an index into ``axes``."""
        if not -len(self.axes) <= axis < len(self.axes):
            raise UnsupportedLayerError(f"axis {axis} is out of range for a tensor of rank {len(self.axes)}")
        return axis % len(self.axes)

    def feature_axis(self, axis: int) -> int | None:
        """The canonical (negative) feature axis for framework axis ``axis``, None if it is not a feature."""
        index = self.axis(axis)
        if self.axes[index] != FEATURE:
            return None
        return self.axes[index:].count(FEATURE) * -1

    def without(self, axis: int) -> Tensor:
        """Drop a unit axis (a squeeze)."""
        index = self.axis(axis)
        if self.axes[index] != UNIT:
            raise UnsupportedLayerError(
                f"squeezes axis {axis} of {self.describe()}, which is not an axis of size 1 "
                f"({_AXIS_NAMES[self.axes[index]]})"
            )
        return Tensor(self.tensor, self.axes[:index] + self.axes[index + 1 :])

    def with_unit(self, axis: int) -> Tensor:
        """Insert a unit axis at ``axis`` of the result (an unsqueeze)."""
        rank = len(self.axes) + 1
        if not -rank <= axis < rank:
            raise UnsupportedLayerError(f"unsqueezes axis {axis} of a tensor of rank {len(self.axes)}")
        index = axis % rank
        return Tensor(self.tensor, (*self.axes[:index], UNIT, *self.axes[index:]))

    def permuted(self, perm: tuple[int, ...]) -> Tensor:
        """Transpose; feature axes must keep their order (rnnstream's features are not transposed)."""
        if sorted(perm) != list(range(len(self.axes))):
            raise UnsupportedLayerError(f"permutation {perm} does not fit a tensor of rank {len(self.axes)}")
        axes = tuple(self.axes[p] for p in perm)
        features = [p for p in perm if self.axes[p] == FEATURE]
        if features != sorted(features):
            raise UnsupportedLayerError(
                f"permutation {perm} of {self.describe()} reorders the feature axes; only batch, time and "
                "unit axes can move"
            )
        return Tensor(self.tensor, axes)


_AXIS_NAMES = {
    BATCH: "the batch axis",
    TIME: "the time axis",
    FEATURE: "a feature axis",
    UNIT: "a unit axis",
    **dict.fromkeys(MERGED, "the batch and time axes flattened together"),
}


def axis_name(tag: str) -> str:
    return _AXIS_NAMES[tag]


@dataclass(frozen=True)
class Stack:
    """Whole-sequence tensors stacked on a new axis ``axis``: PyTorch's ``h_n [layers, B, H]``, or
    ONNX's Concat of several ``Y_h``. Indexing that axis picks one."""

    items: tuple[Tensor, ...]
    axis: int


@dataclass(frozen=True)
class Shape:
    """A shape read off tensors (PyTorch ``x.size()``, ONNX ``Shape``): its dims, or one dim if ``scalar``."""

    dims: tuple[Dim, ...]
    scalar: bool = False


@dataclass(frozen=True)
class Zeros:
    """A tensor that is provably all zeros (an initial state); only its shape is known."""

    dims: tuple[Dim, ...]


def input_layouts(rank: int, integer: bool) -> list[tuple[str, ...]]:
    """The axes a model input of this rank may have, most likely first.

    Floats: ``[B, T, F...]`` or ``[T, B, F...]`` (rank ≥ 3), one step ``[B, F]`` (rank 2). Token ids:
    ``[B, T]`` or ``[T, B]`` (rank 2), one step ``[B]`` (rank 1).
    """
    if (integer and rank == 2) or (not integer and rank >= 3):
        features = (FEATURE,) * (rank - 2)
        return [(BATCH, TIME, *features), (TIME, BATCH, *features)]
    if (integer and rank == 1) or (not integer and rank == 2):
        return [(BATCH,) + (FEATURE,) * (rank - 1)]
    kind = "token ids" if integer else "floats"
    raise UnsupportedLayerError(
        f"a model input of rank {rank} ({kind}) is not supported: rnnstream takes float sequences [B, T, F] "
        "(or [T, B, F]), token ids [B, T], or one step of them ([B, F], [B])"
    )


class Writer:
    """Adds canonical layers to a GraphBuilder under unique names."""

    def __init__(self) -> None:
        self.builder = GraphBuilder()
        self._names: set[str] = set()

    def unique(self, name: str) -> str:
        base, k = name or "node", 1
        while name in self._names or not name:
            name, k = f"{base}_{k}", k + 1
        self._names.add(name)
        return name

    def add(self, layer: Layer, inputs: list[int]) -> list[int]:
        """Add ``layer`` (already named with :meth:`unique`) on ``inputs``; its output tensor ids."""
        return self.builder.add_node(layer.name, layer, inputs)

    def spec(self, value: Tensor) -> TensorSpec:
        return self.builder.spec(value.tensor)

    def dims(self, value: Tensor) -> tuple[Dim, ...]:
        """The framework shape of ``value``: ``"B"``, ``"T"`` and numbers."""
        features = iter(self.spec(value).shape)
        return tuple(next(features) if a == FEATURE else 1 if a == UNIT else a for a in value.axes)

    def last_step(self, name: str, value: Tensor, axis: int, keep: bool) -> Tensor:
        """``value`` at its last time step (a LastStep layer named ``name``, already unique): a whole-sequence
        value; the time axis is dropped, or kept as a unit axis with ``keep`` (ONNX ``Slice(-1:)``)."""
        index = value.axis(axis)
        if value.axes[index] != TIME:
            raise UnsupportedLayerError(f"takes the last step of axis {axis} of {value.describe()}, not a time axis")
        (out,) = self.add(LastStep(name), [value.tensor])
        axes = value.axes[:index] + ((UNIT,) if keep else ()) + value.axes[index + 1 :]
        return Tensor(out, axes)


class NodeContext(ABC):
    """What the PyTorch and ONNX importers' node contexts share: the node's ``name``, the ``writer``
    its layers go to, and ``refuse`` (which says which node is refused and why)."""

    name: str
    writer: Writer

    @abstractmethod
    def refuse(self, why: str) -> UnsupportedLayerError:
        """The error refusing this node, saying why."""

    def add(self, layer: Layer, inputs: list[Tensor]) -> list[int]:
        """Add ``layer`` on ``inputs``; a wiring the layer refuses is refused in the node's name."""
        try:
            return self.writer.add(layer, [t.tensor for t in inputs])
        except UnsupportedLayerError as e:
            raise self.refuse(str(e)) from None

    def layer_name(self, suffix: str = "") -> str:
        """A unique name for a layer of this node."""
        return self.writer.unique(self.name + suffix)


