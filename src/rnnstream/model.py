"""StreamModel: a loaded recurrent model that advances many streams one step at a time.

>>> import rnnstream, numpy as np
>>> m = rnnstream.load(rnnstream.demo.SEED_MODEL)
>>> s = m.initial_state(batch_size=2)
>>> y, s = m.step(np.zeros((2, 4), np.float32), s)
>>> y.shape, s.batch_size
((2, 1), 2)
>>> ys, s = m.run(np.zeros((2, 5, 4), np.float32), s)
>>> ys.shape
(2, 5, 1)
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from rnnstream.backends import Backend, LaunchedStep, make_backend
from rnnstream.errors import InputError, StateError
from rnnstream.graph import Graph, InputSpec
from rnnstream.layers.layer import Layer, StateSlice, TensorSpec
from rnnstream.onnx_export import export_onnx
from rnnstream.state import State
from rnnstream.stepper import Stepper
from rnnstream.types import Array, FloatArray, Inputs, Outputs

__all__ = ["Inputs", "Outputs", "PendingStep", "StreamModel"]


class StreamModel:
    """A recurrent model as a step function over explicit, per-stream state.

    ``step(x, state)`` is pure: it never changes ``x`` or ``state`` and returns a new State.
    ``run(xs, state)`` is exactly ``T`` calls of ``step``. ``backend`` picks what executes the step
    (see :mod:`rnnstream.backends`); every backend agrees with the NumPy oracle within 1e-5.
    """

    def __init__(
        self, graph: Graph, *, name: str = "model", source: str = "", backend: str = "auto", threads: int | None = None,
        device: str | None = None, precision: str = "fp32",
    ) -> None:  # fmt: skip
        self.graph = graph
        self.name = name
        self.source = source
        self.precision = precision
        self.backend: Backend = make_backend(backend, graph, threads=threads, device=device, precision=precision)
        self.fingerprint = _fingerprint(graph)
        self._plain_inputs: dict[int, tuple[np.dtype[Any], tuple[int, ...]]] = {}

    def set_backend(
        self, backend: str, *, threads: int | None = None, device: str | None = None, precision: str | None = None
    ) -> StreamModel:
        """Switch what executes the step (``"auto"``, ``"numpy"``, ``"fused"``, ``"torch"``); returns the model.

        ``threads`` caps the fused kernel's threads (default: every core); ``device`` is the torch
        backend's (``"cpu"``, ``"cuda"``; default ``cuda`` when torch sees a GPU); ``precision`` is the
        weights' (``"fp32"``, ``"bf16"``, ``"bf16-widen"``, ``"bf16-dot"``, ``"int8"``: see :mod:`rnnstream.precision`;
        default: as before). States stay
        valid.
        """
        precision = self.precision if precision is None else precision
        self.backend = make_backend(backend, self.graph, threads=threads, device=device, precision=precision)
        self.precision = precision
        return self

    # -- description -------------------------------------------------------------------------------

    @property
    def state_size(self) -> int:
        """Floats per stream in a state row."""
        return self.graph.state_size

    @property
    def state_layout(self) -> list[StateSlice]:
        return self.graph.state_layout

    @property
    def inputs(self) -> tuple[InputSpec, ...]:
        return self.graph.inputs

    @property
    def output_names(self) -> tuple[str, ...]:
        return self.graph.output_names

    @property
    def output_specs(self) -> list[TensorSpec]:
        return [self.graph.specs[t] for t in self.graph.outputs]

    @property
    def layers(self) -> list[Layer]:
        return [node.layer for node in self.graph.nodes]

    @functools.cached_property
    def token_ranges(self) -> dict[str, int]:
        """For each input of token ids that an Embedding reads, how many ids it takes (ids are 0..n-1).

        >>> import rnnstream
        >>> rnnstream.load(rnnstream.demo.TEXT_MODEL).token_ranges
        {'chars': 76}
        """
        ranges: dict[str, int] = {}
        for spec in self.graph.inputs:
            for node in self.graph.nodes:
                E = getattr(node.layer, "E", None)
                if node.layer.kind == "embedding" and spec.tensor in node.inputs and isinstance(E, np.ndarray):
                    ranges[spec.name] = min(ranges.get(spec.name, E.shape[0]), int(E.shape[0]))
        return ranges

    @property
    def parameter_count(self) -> int:
        return sum(p.size for layer in _unique_layers(self.graph) for p in layer.params().values())

    def __repr__(self) -> str:
        return (
            f"StreamModel({self.name!r}, inputs={len(self.inputs)}, outputs={len(self.output_names)}, "
            f"state_size={self.state_size}, fingerprint={self.fingerprint[:12]})"
        )

    def summary(self) -> str:
        """A table of nodes, their output shapes, state columns and parameter counts."""
        rows = [("layer", "kind", "output", "state columns", "params")]
        for spec in self.inputs:
            rows.append((spec.name, "input", spec.spec.describe(), "", ""))
        seen: set[int] = set()
        columns: dict[str, list[str]] = {}
        for piece in self.state_layout:
            columns.setdefault(piece.layer, []).append(f"{piece.part}[{piece.start}:{piece.stop}]")
        for node in self.graph.nodes:
            layer = node.layer
            params = 0 if id(layer) in seen else sum(p.size for p in layer.params().values())
            seen.add(id(layer))
            parts = ", ".join(columns.get(node.name, []))
            out = " ".join(self.graph.specs[t].describe() for t in node.outputs)
            rows.append((node.name, layer.kind, out, parts, f"{params:,}" if params else ""))
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        lines = [f"StreamModel {self.name!r} ({self.source})" if self.source else f"StreamModel {self.name!r}"]
        for i, r in enumerate(rows):
            lines.append("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
            if i == 0:
                lines.append("  ".join("-" * w for w in widths))
        lines.append(
            f"state: {self.state_size} floats per stream ({4 * self.state_size:,} bytes); "
            f"parameters: {self.parameter_count:,}; fingerprint: {self.fingerprint[:16]}"
        )
        return "\n".join(lines)

    def export_onnx(self, path: str | os.PathLike[str], *, state: str = "row") -> None:
        """Write this model's step as ONNX: inputs + ``state [B, S]`` → outputs + ``new_state [B, S]``.

        Run it in ONNX Runtime or Triton with the same state rows rnnstream uses (see
        :mod:`rnnstream.onnx_export` for what is exported, and ``state="parts"`` for one tensor per
        state part). Needs the ``onnx`` package.
        """
        export_onnx(self, path, state=state)

    # -- state -------------------------------------------------------------------------------------

    def initial_state(self, batch_size: int = 1) -> State:
        """Zero state for ``batch_size`` new streams (Keras' default initial state)."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer) or batch_size < 1:
            raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
        return State.adopt(np.zeros((int(batch_size), self.state_size), np.float32), self.fingerprint)

    def state_from_bytes(self, data: bytes) -> State:
        """Parse a state made by ``State.to_bytes``; refuse one that belongs to another model."""
        state = State.from_bytes(data)
        self.check_state(state)
        return state

    def check_state(self, state: State) -> None:
        """Refuse (StateError) anything but a State of this model: another model's state, or rows of
        another width. Every method that takes a State calls it first.

        >>> import rnnstream
        >>> seed, text = rnnstream.load(rnnstream.demo.SEED_MODEL), rnnstream.load(rnnstream.demo.TEXT_MODEL)
        >>> seed.check_state(seed.initial_state(2))
        >>> seed.check_state(text.initial_state(2))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        rnnstream.errors.StateError: this state belongs to another model (fingerprint ...
        """
        if not isinstance(state, State):
            raise StateError(f"expected a State (from initial_state), got {type(state).__name__}")
        if state.fingerprint != self.fingerprint:
            raise StateError(
                f"this state belongs to another model (fingerprint {state.fingerprint[:12]}), "
                f"not {self.name!r} ({self.fingerprint[:12]}); start from model.initial_state()"
            )
        if state.size != self.state_size:
            raise StateError(f"state rows have {state.size} floats, this model needs {self.state_size}")

    # -- stepping ----------------------------------------------------------------------------------

    def step(
        self, x: Inputs, state: State, *, check_finite: bool = False, checked: bool = False
    ) -> tuple[Outputs, State]:
        """Advance every stream in ``state`` by one step.

        ``x`` is ``[B, *features]`` float (or ``[B]`` integer token ids). Returns the outputs at this
        step, ``[B, ...]`` (a list if the model has several), and the new State. Bad input raises
        :class:`~rnnstream.InputError` and changes nothing. ``checked``: ``x`` is a list of arrays already
        matched and validated for this state (by :meth:`check_inputs`, or the pool's batch stacking), so
        they are not checked again.
        """
        self.check_state(state)
        inputs = list(x) if checked else self.check_inputs(x, state.batch_size, check_finite=check_finite)
        ys, rows = self.backend.step(inputs, state.rows)
        return _unaliased(ys, [*inputs, rows]), State.adopt(rows, self.fingerprint)

    @property
    def can_launch(self) -> bool:
        """Whether :meth:`launch` can run this model's step in the background (the fused backend, with
        every layer one its kernel steps)."""
        return self.backend.can_launch

    def launch(
        self, x: Inputs, state: State, fd: int, threads: int | None = None, *, checked: bool = False
    ) -> PendingStep:
        """Start ``step(x, state)`` on a background thread of the compiled kernel and return at once;
        8 bytes are written to ``fd`` (a pipe or eventfd an event loop watches) when it is done. The
        inputs are checked first: bad input raises InputError and starts nothing. ``threads``: how many
        of the backend's threads share the step (default all); ``checked`` as for :meth:`step`. Needs
        :attr:`can_launch`.

        >>> import os, numpy as np, rnnstream
        >>> m = rnnstream.load(rnnstream.demo.SEED_MODEL)
        >>> if m.can_launch:
        ...     read, write = os.pipe()
        ...     pending = m.launch(np.ones((2, 4), np.float32), m.initial_state(2), write)
        ...     _ = os.read(read, 8)  # blocks until the step is done
        ...     y, s = pending.result()
        ...     assert np.allclose(y, m.step(np.ones((2, 4), np.float32), m.initial_state(2))[0])
        """
        if not self.can_launch:
            raise InputError(f"model {self.name!r} cannot launch on backend {self.backend.name!r}; call step()")
        self.check_state(state)
        inputs = list(x) if checked else self.check_inputs(x, state.batch_size)
        launched = self.backend.launch(inputs, state.rows, fd, threads)
        return PendingStep(self, inputs, launched)

    def stepper(self, batch_size: int = 1, state: State | None = None) -> Stepper:
        """A :class:`~rnnstream.stepper.Stepper` for ``batch_size`` streams starting at ``state`` (default:
        zeros): ``stepper(x)`` is ``step(x, state)`` over preallocated buffers, the state kept inside
        (``stepper.state``), for a caller that steps the same streams in a loop. Same outputs as
        :meth:`step`, bit for bit; the returned arrays are overwritten by later calls.

        >>> import numpy as np, rnnstream
        >>> m = rnnstream.load(rnnstream.demo.SEED_MODEL)
        >>> step = m.stepper()
        >>> for t in range(3):
        ...     y = step(np.full((1, 4), t, np.float32))
        >>> step.state.batch_size, y.shape
        (1, (1, 1))
        """
        return Stepper(self, batch_size, state)

    def run(self, xs: Inputs, state: State, *, check_finite: bool = False) -> tuple[Outputs, State]:
        """Advance every stream through a whole sequence ``xs [B, T, *features]``: T calls of ``step``.

        Returns outputs ``[B, T, ...]`` and the State after the last step.
        """
        self.check_state(state)
        sequences = self.check_inputs(xs, state.batch_size, check_finite=check_finite, time_axis=True)
        T = sequences[0].shape[1]
        rows: FloatArray = state.rows
        per_step: list[list[FloatArray]] = []
        for t in range(T):
            step_inputs = [a[:, t] for a in sequences]
            ys, rows = self.backend.step(step_inputs, rows)
            per_step.append(ys)
        outputs = [
            np.stack([ys[k] for ys in per_step], axis=1)
            if T
            else np.zeros((state.batch_size, 0, *spec.shape), np.float32)
            for k, spec in enumerate(self.output_specs)
        ]
        return (outputs[0] if len(outputs) == 1 else outputs), State.adopt(
            rows if T else np.array(state.rows), self.fingerprint
        )

    def check_inputs(
        self, x: Inputs, batch_size: int, *, check_finite: bool = False, time_axis: bool = False
    ) -> list[Array]:
        """``x`` matched to the model's inputs (by position or by name) and validated, one array per input in
        the model's order: shape ``[batch_size, *features]`` (``[batch_size, T, *features]`` with
        ``time_axis``), float32 or int64 token ids, and with ``check_finite`` no NaN or ±Inf. Bad input
        raises :class:`~rnnstream.InputError` naming the input. ``step``, ``run`` and ``launch`` call it.

        >>> import numpy as np, rnnstream
        >>> m = rnnstream.load(rnnstream.demo.SEED_MODEL)
        >>> [a.dtype.name for a in m.check_inputs(np.zeros((2, 4), np.float64), 2)]
        ['float32']
        >>> m.check_inputs(np.zeros((2, 3)), 2)
        Traceback (most recent call last):
        rnnstream.errors.InputError: input 'input' has shape (2, 3), expected (B, 4)
        """
        batch = batch_size
        specs = self.graph.inputs
        plain = len(specs) == 1 and not (check_finite or time_axis) and type(x) is np.ndarray
        if plain and isinstance(x, np.ndarray) and (x.dtype, x.shape) == self._plain_input(batch):
            return [x]  # already what the model takes: no copy, no check
        if isinstance(x, Mapping):
            unknown = sorted(set(x) - {s.name for s in specs})
            missing = [s.name for s in specs if s.name not in x]
            if unknown or missing:
                raise InputError(
                    f"inputs by name: missing {missing}, unknown {unknown}; "
                    f"this model's inputs are {[s.name for s in specs]}"
                )
            given = [x[s.name] for s in specs]
        elif len(specs) > 1:
            if not isinstance(x, list | tuple) or len(x) != len(specs):
                raise InputError(
                    f"this model has {len(specs)} inputs {[s.name for s in specs]}: "
                    "pass a list in that order or a dict by name"
                )
            given = list(x)
        else:
            given = [x]
        prepared = [
            _validate(value, spec, batch, check_finite, time_axis) for value, spec in zip(given, specs, strict=True)
        ]
        if time_axis and len({a.shape[1] for a in prepared}) > 1:
            lengths = {s.name: a.shape[1] for a, s in zip(prepared, specs, strict=True)}
            raise InputError(f"inputs have different sequence lengths: {lengths}")
        return prepared

    def _plain_input(self, batch: int) -> tuple[np.dtype[Any], tuple[int, ...]]:
        """The one input's dtype and shape at this batch size, as a step takes it without a copy."""
        found = self._plain_inputs.get(batch)
        if found is None:
            spec = self.graph.inputs[0].spec
            found = self._plain_inputs[batch] = (np.dtype(spec.dtype), (batch, *spec.shape))
        return found

class PendingStep:
    """A step started by :meth:`StreamModel.launch`: ``done()``, then ``result()`` (what ``step`` returns)."""

    def __init__(self, model: StreamModel, inputs: list[Array], launched: LaunchedStep) -> None:
        self._model, self._inputs, self._launched = model, inputs, launched

    def done(self) -> bool:
        """True once the step has run."""
        return bool(self._launched.done())

    def result(self) -> tuple[Outputs, State]:
        """The outputs and the new State; the step must be done."""
        if not self.done():
            raise RuntimeError("the step is still running: wait for its file descriptor, or for done()")
        rows, model = self._launched.new_state, self._model
        return _unaliased(self._launched.outputs, [*self._inputs, rows]), State.adopt(rows, model.fingerprint)


def _validate(value: Any, spec: InputSpec, batch: int, check_finite: bool, time_axis: bool) -> Array:
    arr = value if isinstance(value, np.ndarray) else np.asarray(value)
    lead = 2 if time_axis else 1
    if arr.ndim != lead + len(spec.spec.shape) or arr.shape[lead:] != spec.spec.shape:
        dims = ["B", "T"][:lead] + [str(d) for d in spec.spec.shape]
        expected = f"({dims[0]},)" if len(dims) == 1 else "(" + ", ".join(dims) + ")"
        raise InputError(f"input {spec.name!r} has shape {arr.shape}, expected {expected}")
    if arr.shape[0] != batch:
        raise InputError(f"input {spec.name!r} has batch size {arr.shape[0]}, but the state holds {batch} streams")
    if spec.spec.dtype == "int64":
        if arr.dtype.kind not in "iu":
            raise InputError(f"input {spec.name!r} takes integer token ids, got dtype {arr.dtype}")
        return arr.astype(np.int64, copy=False)
    if arr.dtype.kind not in "fiu":
        raise InputError(f"input {spec.name!r} takes real numbers (float32), got dtype {arr.dtype}")
    arr = arr.astype(np.float32, copy=False)
    if check_finite and not np.all(np.isfinite(arr)):
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise InputError(
            f"input {spec.name!r} has a non-finite value {arr[tuple(bad)]} at index {tuple(int(i) for i in bad)}"
        )
    return arr


def _unaliased(ys: list[FloatArray], owned: list[Array]) -> Outputs:
    """The step's outputs, as the caller gets them. An output may be an input passed through identity
    layers, or (fused backend) a view of the new state's rows: never hand back the caller's array or a
    window into the state."""
    ys = [y.copy() if _aliases(y, owned) else y for y in ys]
    return ys[0] if len(ys) == 1 else ys


def _aliases(y: Array, owned: list[Array]) -> bool:
    """Whether ``y`` is, or is a view into, one of ``owned`` (cheap: arrays owning their data are skipped)."""
    for a in owned:  # a loop: this runs on every step, and a generator costs more than the test
        if y is a:
            return True
    return y.base is not None and any(np.may_share_memory(y, a) for a in owned)


def _unique_layers(graph: Graph) -> list[Layer]:
    seen: dict[int, Layer] = {}
    for node in graph.nodes:
        seen.setdefault(id(node.layer), node.layer)
    return list(seen.values())


def _fingerprint(graph: Graph) -> str:
    """sha256 over the architecture (wiring, kinds, configs, shapes) and every weight's bytes."""
    digest = hashlib.sha256()
    architecture = {
        "inputs": [(s.name, s.spec.shape, s.spec.dtype, s.tensor) for s in graph.inputs],
        "nodes": [
            (n.name, n.layer.kind, n.layer.config(), n.inputs, n.outputs, n.start, n.stop) for n in graph.nodes
        ],
        "outputs": graph.outputs,
    }
    digest.update(json.dumps(architecture, sort_keys=True, default=str).encode())
    for layer in _unique_layers(graph):
        for key, value in sorted(layer.params().items()):
            digest.update(f"{layer.name}/{key}{value.shape}".encode())
            digest.update(np.ascontiguousarray(value, dtype=np.float32).tobytes())
    return digest.hexdigest()
