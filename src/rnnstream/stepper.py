"""Stepper: one batch of streams stepped in a loop over preallocated buffers (``StreamModel.stepper``).

``model.step`` is pure: each call checks its arguments, allocates a new state and outputs and returns
them. A caller that steps the same streams over and over (one sensor, one generated sequence) can
instead bind the step once: the stepper keeps two state buffers and steps from one into the other,
each call copying ``x`` into its input buffer and running the bound step (the fused kernel: one C call
for the whole step, its arrays checked when bound). The outputs are the same as ``model.step``'s, to
the bit: the same kernel on the same threads. Backends that cannot bind (NumPy, torch, graphs with
layers the kernel does not step) run ``backend.step`` inside the same interface.

>>> import numpy as np, rnnstream
>>> m = rnnstream.load(rnnstream.demo.SEED_MODEL)
>>> step = m.stepper(batch_size=1)
>>> x = np.ones((1, 4), np.float32)
>>> y = step(x)  # overwritten by the next call: copy it to keep it
>>> y_ref, s = m.step(x, m.initial_state(1))
>>> bool(np.array_equal(y, y_ref)), step.state == s
(True, True)
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from rnnstream.backends import Backend, BoundStep
from rnnstream.errors import InputError
from rnnstream.graph import InputSpec
from rnnstream.state import State
from rnnstream.types import Array, FloatArray, Inputs, Outputs

__all__ = ["Stepper"]


class Steppable(Protocol):
    """What a Stepper needs of its model (a :class:`~rnnstream.StreamModel`)."""

    name: str
    fingerprint: str
    backend: Backend

    @property
    def inputs(self) -> tuple[InputSpec, ...]: ...

    def initial_state(self, batch_size: int = 1) -> State: ...

    def check_state(self, state: State) -> None: ...

    def check_inputs(
        self, x: Inputs, batch_size: int, *, check_finite: bool = False, time_axis: bool = False
    ) -> list[Array]: ...


class Stepper:
    """``stepper(x)`` advances the bound streams by one step and returns the outputs (``[B, ...]``, a list
    if the model has several) in buffers the next call overwrites. ``state`` reads or sets the streams'
    State. Make one with :meth:`StreamModel.stepper`; one thread at a time may call it.
    """

    def __init__(self, model: Steppable, batch_size: int, state: State | None = None) -> None:
        start = model.initial_state(batch_size) if state is None else state
        model.check_state(start)
        if start.batch_size != batch_size:
            raise InputError(f"the state holds {start.batch_size} streams, the stepper {batch_size}")
        self.model, self.batch_size = model, batch_size
        self._rows = [np.array(start.rows), np.empty_like(start.rows)]  # the current state, the next
        self._shapes = [(batch_size, *spec.spec.shape) for spec in model.inputs]
        self._xs: list[FloatArray] = [np.zeros(shape, np.float32) for shape in self._shapes]
        self._bound: list[BoundStep] = []  # from rows 0 into rows 1, and back; empty: step unbound
        if all(spec.spec.dtype == "float32" for spec in model.inputs):
            bound = [model.backend.bind(self._xs, self._rows[i], self._rows[1 - i]) for i in (0, 1)]
            self._bound = [b for b in bound if b is not None] if None not in bound else []
        self._one_input = len(self._xs) == 1
        # what a call returns, by the turn after it: the outputs the bound step wrote into rows 1 - turn
        self._results: list[Outputs] = [_as_returned(b.outputs) for b in reversed(self._bound)]
        self._checked: list[Array] = []  # unbound: this step's inputs
        self._turn = 0  # self._rows[self._turn] holds the current state

    def __call__(self, x: Inputs) -> Outputs:
        if self._bound:
            bound = self._bound[self._turn]
            if not (self._one_input and bound.run_from(x, self._xs[0])):  # x as it comes: one C call
                self._put(x)
                bound.run()
            self._turn = 1 - self._turn
            return self._results[self._turn]
        self._put(x)
        return _as_returned(self._step_unbound())

    def _put(self, x: Inputs) -> None:
        """Check ``x`` as ``model.step`` does and keep it for the step."""
        checked = self.model.check_inputs(x, self.batch_size)
        if self._bound:
            for buffer, value in zip(self._xs, checked, strict=True):
                np.copyto(buffer, value)
        else:
            self._checked = checked

    def _step_unbound(self) -> list[FloatArray]:
        ys, rows = self.model.backend.step(self._checked, self._rows[self._turn])
        self._rows[self._turn] = rows
        owned = [*self._checked, rows]  # as model.step: never a view of the state or the caller's input
        return [y.copy() if any(np.may_share_memory(y, a) for a in owned) else y for y in ys]

    @property
    def state(self) -> State:
        """The streams' state now (a copy: stepping on does not change it)."""
        return State(self._rows[self._turn], self.model.fingerprint)

    @state.setter
    def state(self, state: State) -> None:
        self.model.check_state(state)
        if state.batch_size != self.batch_size:
            raise InputError(f"the state holds {state.batch_size} streams, the stepper {self.batch_size}")
        if self._bound:
            np.copyto(self._rows[self._turn], state.rows)  # the bound step reads this buffer
        else:
            self._rows[self._turn] = np.array(state.rows)

    def __repr__(self) -> str:
        kind = "bound" if self._bound else "unbound"
        return f"Stepper({self.model.name!r}, batch_size={self.batch_size}, {kind} {self.model.backend.name} step)"


def _as_returned(outputs: list[FloatArray]) -> Outputs:
    """One model output as it is, several as a list (as ``model.step`` returns them)."""
    return outputs[0] if len(outputs) == 1 else outputs
