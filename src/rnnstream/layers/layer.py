"""What every canonical layer is: a batched step over one time step of many streams.

A layer sees one time step at a time: each input is ``[B, *features]``. A layer that remembers the past
(LSTM, GRU, SimpleRNN, causal Conv1D) owns ``state_size`` floats of each stream's state row and returns
its new slice; every other layer has ``state_size == 0``.

Masks follow Keras: a mask is a ``[B]`` boolean, True where the step is real. Most layers pass the
mask of their input on; Masking and ``Embedding(mask_zero=True)`` make one; recurrent layers use it to
keep their state on masked steps.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import reduce
from typing import Any, ClassVar

import numpy as np

from rnnstream.errors import UnsupportedLayerError
from rnnstream.types import BoolArray, FloatArray, Shape


@dataclass(frozen=True)
class TensorSpec:
    """One tensor of the graph, as seen at one step.

    ``shape`` is the feature shape (no batch, no time axis); ``dtype`` is ``"float32"`` or ``"int64"``
    (token ids); ``sequence`` is True for a value per time step and False for a whole-sequence value
    (what an RNN with ``return_sequences=False`` returns: at each step, the value as if the sequence
    ended there).
    """

    shape: Shape
    dtype: str = "float32"
    sequence: bool = True

    def describe(self) -> str:
        dims = ", ".join(str(d) for d in self.shape)
        time = "T, " if self.sequence else ""
        kind = "" if self.dtype == "float32" else f" {self.dtype}"
        return f"(B, {time}{dims}){kind}".replace(", )", ")")


@dataclass(frozen=True)
class StateSlice:
    """Columns ``[start, stop)`` of the state row hold ``part`` (e.g. ``"h"``) of layer ``layer``."""

    layer: str
    part: str
    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start


@dataclass
class StepResult:
    """What a layer returns for one step: its outputs, the mask of output 0, and its new state slice."""

    outputs: list[FloatArray]
    mask: BoolArray | None
    state: FloatArray


class Layer(ABC):
    """A canonical, framework-neutral layer with a batched step."""

    kind: ClassVar[str]

    def __init__(self, name: str) -> None:
        self.name = name

    @property
    def state_parts(self) -> list[tuple[str, int]]:
        """The named pieces of this layer's state, in column order: ``[("h", 64), ("c", 64)]``."""
        return []

    @property
    def state_size(self) -> int:
        return sum(size for _, size in self.state_parts)

    @abstractmethod
    def output_specs(self, inputs: list[TensorSpec]) -> list[TensorSpec]:
        """Check the inputs this layer is wired to and return the specs of its outputs."""

    @abstractmethod
    def step(self, inputs: list[FloatArray], mask: BoolArray | None, state: FloatArray) -> StepResult:
        """Advance one step: ``inputs`` are ``[B, *features]``, ``state`` is ``[B, state_size]``."""

    def params(self) -> dict[str, FloatArray]:
        """The layer's weights in rnnstream's canonical layout, by name."""
        return {}

    def config(self) -> dict[str, Any]:
        """The hyperparameters that, with :meth:`params`, define what the layer computes."""
        return {}

    def combine_masks(self, masks: list[BoolArray | None]) -> BoolArray | None:
        """The mask a call receives from its inputs' masks. Keras 2's rule, also right for one input:
        the AND of the masks that exist. Keras 3 merges override it."""
        present = [m for m in masks if m is not None]
        return reduce(np.logical_and, present) if present else None

    def initial_state(self, batch_size: int) -> FloatArray:
        return np.zeros((batch_size, self.state_size), dtype=np.float32)

    def refuse(self, why: str) -> UnsupportedLayerError:
        return UnsupportedLayerError(f"layer {self.name!r} ({type(self).__name__}): {why}")


class StatelessLayer(Layer):
    """A layer whose output at a step depends only on its inputs at that step."""

    def step(self, inputs: list[FloatArray], mask: BoolArray | None, state: FloatArray) -> StepResult:
        return StepResult([self.apply(inputs)], self.output_mask(inputs, mask), state)

    @abstractmethod
    def apply(self, inputs: list[FloatArray]) -> FloatArray:
        """The layer's function of one step's inputs."""

    def output_mask(self, inputs: list[FloatArray], mask: BoolArray | None) -> BoolArray | None:
        """Keras' ``compute_mask``: by default the incoming mask passes through."""
        return mask

    def output_specs(self, inputs: list[TensorSpec]) -> list[TensorSpec]:
        if len(inputs) != 1:
            raise self.refuse(f"takes one input, got {len(inputs)}")
        return [self.output_spec(inputs[0])]

    def output_spec(self, x: TensorSpec) -> TensorSpec:
        """The spec of the single output for a single input; layers that change shape override it."""
        return x


def float_input(layer: Layer, x: TensorSpec) -> None:
    """Refuse token ids where a layer needs floats."""
    if x.dtype != "float32":
        raise layer.refuse(f"needs float inputs, but is fed {x.dtype} token ids; put an Embedding first")


def last_dim(layer: Layer, x: TensorSpec) -> int:
    """The size of the feature axis a layer works on, refusing inputs that have none."""
    float_input(layer, x)
    if not x.shape:
        raise layer.refuse(
            "input has no feature axis (shape (batch, time)); feed it (batch, time, features)"
        )
    return x.shape[-1]
