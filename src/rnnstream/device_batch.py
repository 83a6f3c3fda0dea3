"""A batch of streams whose state stays on a torch device (CPU or CUDA), advanced in place.

``step(x)`` uploads only ``x`` and downloads only the outputs; on CUDA each batch size's step is captured
once as a CUDA graph and replayed (:mod:`rnnstream.backends.torch_graph`). Needs torch.

>>> import numpy as np, rnnstream
>>> model = rnnstream.load(rnnstream.demo.SEED_MODEL).set_backend("torch", device="cpu")
>>> batch = DeviceBatch(model, 3, device="cpu")
>>> for _ in range(5):
...     y = batch.step(np.ones((3, 4), np.float32))
>>> state = model.initial_state(3)
>>> for _ in range(5):
...     y_host, state = model.step(np.ones((3, 4), np.float32), state)
>>> bool(np.allclose(y, y_host, atol=1e-6)), bool(np.allclose(batch.state().rows, state.rows, atol=1e-6))
(True, True)
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from rnnstream.backends import concrete_precision
from rnnstream.backends.torch import TorchBackend, TorchProgram, resolve_device
from rnnstream.backends.torch_graph import FixedStep, upload
from rnnstream.errors import InputError, UnsupportedLayerError
from rnnstream.model import StreamModel
from rnnstream.precision import at_precision
from rnnstream.state import State
from rnnstream.types import Inputs, Outputs


class DeviceBatch:
    """The states of a set of streams, ``[B, S]``, kept on a torch device and advanced in place.

    ``streams``: how many streams start from the initial state, or a State to start from. ``step(x)``
    takes and returns host arrays like ``StreamModel.step``; the state stays on the device (read it
    with :meth:`state`, replace it with :meth:`load`). Streams join with :meth:`add` and leave with
    :meth:`remove`, by row. On CUDA (with ``cuda_graphs``) the step for each batch size is captured
    once as a CUDA graph and replayed; the ``max_graphs`` most recently used are kept. The whole
    model must have torch steps: a node that would run NumPy is refused. One thread at a time may
    call it (it is the state's only owner: no locks).
    """

    def __init__(
        self,
        model: StreamModel,
        streams: int | State = 1,
        *,
        device: str | torch.device | None = None,
        cuda_graphs: bool = True,
        max_graphs: int = 8,
    ) -> None:
        if isinstance(max_graphs, bool) or not isinstance(max_graphs, int) or max_graphs < 1:
            raise InputError(f"max_graphs must be a positive integer, got {max_graphs!r}")
        self.model = model
        self.device = resolve_device(device)
        backend = model.backend
        if isinstance(backend, TorchBackend) and backend.device == self.device:
            program = backend.program  # the weights are on the device already
        else:
            program = TorchProgram(at_precision(model.graph, concrete_precision(model.precision, "torch")), self.device)
        if program.host_nodes:
            nodes = "; ".join(f"{name!r}: {why}" for name, why in program.host_nodes.items())
            raise UnsupportedLayerError(
                f"DeviceBatch keeps the state on the device, but these nodes have no torch step: {nodes}. "
                "Step this model with StreamModel.step (backend 'torch' runs those nodes in NumPy) instead"
            )
        self._program = program
        self._capture = bool(cuda_graphs) and self.device.type == "cuda"
        self._max_graphs = max_graphs
        self._steps: OrderedDict[int, FixedStep] = OrderedDict()
        start = streams if isinstance(streams, State) else model.initial_state(streams)
        model.check_state(start)
        with torch.no_grad():
            self._switch(upload(start.rows, self.device))

    @property
    def batch_size(self) -> int:
        return self._current.batch

    @property
    def captured(self) -> bool:
        """Whether :meth:`step` replays a CUDA graph."""
        return self._current.captured

    def __len__(self) -> int:
        return self.batch_size

    def __repr__(self) -> str:
        how = "CUDA graph" if self.captured else "eager"
        return f"DeviceBatch({self.model.name!r}, streams={self.batch_size}, device={self.device}, {how})"

    def step(self, x: Inputs, *, check_finite: bool = False) -> Outputs:
        """Advance every stream one step: ``x`` as for ``StreamModel.step``; returns the outputs.

        Bad input raises :class:`~rnnstream.InputError` before anything reaches the device.
        """
        # StreamModel's own validation, so both paths accept and refuse exactly the same inputs.
        xs = self.model.check_inputs(x, self.batch_size, check_finite=check_finite)
        self._program.check_tokens(xs)
        with torch.no_grad():
            ys = self._current(xs)
        return ys[0] if len(ys) == 1 else ys

    def state(self) -> State:
        """A host copy of every stream's state, in row order."""
        with torch.no_grad():
            rows = self._current.state.to("cpu", copy=True).numpy()
        return State.adopt(rows, self.model.fingerprint)

    def load(self, state: State, rows: Sequence[int] | None = None) -> None:
        """Replace every stream's state with ``state`` (the batch size becomes its size), or, with
        ``rows``, only those rows (one row of ``state`` each, in order). Refuses another model's state."""
        self.model.check_state(state)
        with torch.no_grad():
            if rows is None:
                self._switch(upload(state.rows, self.device))
                return
            index = self._rows(rows, "load")
            if len(index) != state.batch_size:
                raise InputError(f"load: {len(index)} rows given for a state of {state.batch_size} streams")
            self._current.state[torch.tensor(index, device=self.device)] = upload(state.rows, self.device)

    def add(self, streams: int | State = 1) -> list[int]:
        """Append streams (``streams`` new ones from the initial state, or a State's rows); returns their rows."""
        new = streams if isinstance(streams, State) else self.model.initial_state(streams)
        self.model.check_state(new)
        first = self.batch_size
        with torch.no_grad():
            self._switch(torch.cat([self._current.state, upload(new.rows, self.device)]))
        return list(range(first, self.batch_size))

    def remove(self, rows: Sequence[int]) -> None:
        """Drop the streams at ``rows``; the others keep their order (and move up to fill the gaps)."""
        gone = set(self._rows(rows, "remove"))
        keep = [i for i in range(self.batch_size) if i not in gone]
        if not keep:
            raise InputError("remove: a DeviceBatch keeps at least one stream; make a new one when all leave")
        with torch.no_grad():
            self._switch(self._current.state[torch.tensor(keep, device=self.device)])

    def _rows(self, rows: Sequence[int], verb: str) -> list[int]:
        index = list(rows)
        if not index or any(isinstance(i, bool) or not isinstance(i, int | np.integer) for i in index):
            raise InputError(f"{verb}: rows must be a non-empty list of row numbers, got {rows!r}")
        bad = [int(i) for i in index if not 0 <= i < self.batch_size]
        if bad or len(set(index)) != len(index):
            raise InputError(
                f"{verb}: rows {list(map(int, index))} must be distinct and in 0..{self.batch_size - 1}"
                + (f" ({bad} are not)" if bad else "")
            )
        return [int(i) for i in index]

    def _switch(self, rows: Tensor) -> None:
        """Make ``rows [B, S]`` (a tensor of its own) the state, on the step for batch size ``B``."""
        batch = rows.shape[0]
        fixed = self._steps.pop(batch, None)
        if fixed is None:
            fixed = FixedStep(self._program, batch, capture=self._capture)
        self._steps[batch] = fixed
        while len(self._steps) > self._max_graphs:
            self._steps.popitem(last=False)
        fixed.state.copy_(rows)
        self._current = fixed
