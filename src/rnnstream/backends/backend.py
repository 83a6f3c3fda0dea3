"""What a backend is: the protocol StreamModel and the server program against, and the defaults of a
backend that only steps (cannot launch a step in the background)."""

from __future__ import annotations

from typing import Protocol

from rnnstream.graph import Graph
from rnnstream.types import Array, FloatArray


class LaunchedStep(Protocol):
    """A step started by :meth:`Backend.launch`: ``outputs`` and ``new_state`` are filled once ``done()``."""

    @property
    def outputs(self) -> list[FloatArray]: ...

    @property
    def new_state(self) -> FloatArray: ...

    def done(self) -> bool:
        """True once the step has run."""
        ...


class BoundStep(Protocol):
    """One step bound to fixed arrays by :meth:`Backend.bind`: ``run()`` reads the bound inputs and state
    and writes the bound new state and ``outputs``."""

    @property
    def outputs(self) -> list[FloatArray]: ...

    def run(self) -> None:
        """Step once, in place."""
        ...

    def run_from(self, x: object, buffer: FloatArray) -> bool:
        """Copy ``x`` into the bound input array ``buffer`` and step, when ``x`` is already a C-contiguous
        float32 array of its shape (the caller's fast path); else False and nothing is done."""
        ...


class Backend(Protocol):
    """What StreamModel (and the server's batcher) need of a backend."""

    name: str
    graph: Graph

    @property
    def threads(self) -> int:
        """How many threads one step may use."""
        ...

    @property
    def can_launch(self) -> bool:
        """Whether :meth:`launch` can run this graph's step in the background."""
        ...

    def step(self, xs: list[Array], state: FloatArray) -> tuple[list[FloatArray], FloatArray]:
        """Validated inputs ``[B, *features]`` and state ``[B, S]`` → outputs and a new state array."""
        ...

    def launch(self, xs: list[Array], state: FloatArray, fd: int, threads: int | None = None) -> LaunchedStep:
        """Start :meth:`step` on a background thread and return at once; 8 bytes are written to ``fd`` when
        it is done; ``threads`` (at most :attr:`threads`) share its work. Needs :attr:`can_launch`."""
        ...

    def bind(self, xs: list[FloatArray], state: FloatArray, new_state: FloatArray) -> BoundStep | None:
        """The step from ``state`` into ``new_state`` over the input buffers ``xs`` (float32, contiguous
        rows), checked once and run again and again; None when this backend cannot bind a step."""
        ...


class StepOnly:
    """The launch members of a backend that steps on the caller's thread only (``can_launch`` is False)."""

    @property
    def can_launch(self) -> bool:
        return False

    def launch(self, xs: list[Array], state: FloatArray, fd: int, threads: int | None = None) -> LaunchedStep:
        raise RuntimeError(f"backend {getattr(self, 'name', '?')!r} cannot launch a step; call step() instead")

    def bind(self, xs: list[FloatArray], state: FloatArray, new_state: FloatArray) -> BoundStep | None:
        return None
