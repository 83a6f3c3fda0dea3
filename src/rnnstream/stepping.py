"""One batched step of many streams: read their records, decide per stream, one engine call, write back.

``advance`` serves both ``Streams.step`` (any error fails the whole call, before anything is written)
and ``Streams.step_each`` (``isolate=True``: a request's error is that request's result, and the
others go ahead), which the server's batcher uses.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rnnstream.errors import (
    ConflictError,
    InputError,
    RnnstreamError,
    StepOrderError,
    StreamLimitError,
    StreamNotFoundError,
)
from rnnstream.model import Inputs, Outputs, StreamModel
from rnnstream.state import State
from rnnstream.stores import Store
from rnnstream.types import Array, FloatArray, IntArray

Result = Outputs | RnnstreamError


@dataclass(frozen=True)
class StepRequest:
    """One step of one stream.

    ``step_number``: for exactly-once retries (the first step is 1). ``start``: begin the stream afresh
    (Triton's ``sequence_start``). ``end``: forget the stream after this step (``sequence_end``).
    ``must_exist``: refuse a stream the store does not hold (a step of an unknown sequence).
    """

    stream_id: str
    x: Inputs
    step_number: int | None = None
    start: bool = False
    end: bool = False
    must_exist: bool = False


@dataclass
class Codec:
    """How one model's outputs travel through a store: flattened to one float32 row per stream."""

    shapes: list[tuple[int, ...]]
    sizes: list[int] = field(init=False)

    def __post_init__(self) -> None:
        self.sizes = [int(np.prod(shape)) for shape in self.shapes]

    def flatten(self, ys: Outputs) -> FloatArray:
        outputs = ys if isinstance(ys, list) else [ys]
        return np.concatenate([np.asarray(y, np.float32).reshape(len(y), -1) for y in outputs], axis=1)

    def unflatten(self, flat: FloatArray) -> Outputs:
        """One stream's outputs from its row (copied)."""
        parts, start = [], 0
        for shape, size in zip(self.shapes, self.sizes, strict=True):
            parts.append(np.array(flat[start : start + size], np.float32).reshape(shape))
            start += size
        return parts[0] if len(parts) == 1 else parts

    def unflatten_rows(self, flat: FloatArray) -> list[Outputs]:
        """Every stream's outputs from ``flat (n, O)``, which the caller hands over: rows of it, not copies."""
        n, parts, start = len(flat), [], 0
        for shape, size in zip(self.shapes, self.sizes, strict=True):
            parts.append(flat[:, start : start + size].reshape(n, *shape))  # (n, *shape)
            start += size
        if len(parts) == 1:
            return list(parts[0])
        return [list(outputs) for outputs in zip(*parts, strict=True)]


def stack_inputs(model: StreamModel, requests: Sequence[StepRequest]) -> tuple[list[Array], dict[int, InputError]]:
    """One batch array per model input from each request's own input; bad requests are set aside."""
    specs = model.inputs
    if len(specs) == 1:  # the usual case: a one-input model and arrays of the right shape, stacked at once
        shape = specs[0].spec.shape
        arrays = [x for request in requests if isinstance(x := request.x, np.ndarray) and x.shape == shape]
        if len(arrays) == len(requests):
            if not shape:  # 0-d values (token ids) do not concatenate
                return [np.stack(arrays)], {}
            return [np.concatenate(arrays).reshape(len(arrays), *shape)], {}  # a third of np.stack's time
    columns: list[list[Array]] = [[] for _ in specs]
    errors: dict[int, InputError] = {}
    for k, request in enumerate(requests):
        x, stream_id = request.x, request.stream_id
        if isinstance(x, Mapping):
            parts = [x.get(spec.name) for spec in specs]
        elif len(specs) > 1:
            parts = list(x) if isinstance(x, list | tuple) else []
        else:
            parts = [x]
        if len(parts) != len(specs) or any(p is None for p in parts):
            errors[k] = InputError(f"stream {stream_id!r}: give one value per model input {[s.name for s in specs]}")
            continue
        arrays = [np.asarray(p) for p in parts]
        wrong = [(s, a) for s, a in zip(specs, arrays, strict=True) if a.shape != s.spec.shape]
        if wrong:
            spec, array = wrong[0]
            errors[k] = InputError(
                f"stream {stream_id!r}: input {spec.name!r} has shape {array.shape}, "
                f"expected {spec.spec.shape} (one step, no batch axis)"
            )
            continue
        for column, array in zip(columns, arrays, strict=True):
            column.append(array)
    if len(errors) == len(requests):
        return [], errors
    return [np.stack(column) for column in columns], errors


def advance(
    model: StreamModel,
    store: Store,
    codec: Codec,
    requests: Sequence[StepRequest],
    *,
    isolate: bool,
    check_finite: bool,
    check_limit: Callable[[int], None],
    conflict_retries: int,
) -> list[Result]:
    """Step every request's stream once (see the module docstring); one result per request."""
    results: dict[int, Result] = {}
    batch, input_errors = stack_inputs(model, requests)
    _fail(results, input_errors, isolate)
    ok = [k for k in range(len(requests)) if k not in input_errors]
    row_of = {k: row for row, k in enumerate(ok)}  # request → its row in ``batch``
    pending = ok
    for _ in range(conflict_retries + 1):
        if not pending:
            break
        pending = _attempt(model, store, codec, requests, batch, row_of, pending, results,
                           isolate=isolate, check_finite=check_finite, check_limit=check_limit)
    if pending:
        conflicted = [requests[k].stream_id for k in pending]
        error = ConflictError(
            f"streams {conflicted} were advanced by another process during each of {conflict_retries + 1} "
            "attempts; retry the call (with step numbers it is safe)",
            stream_ids=conflicted,
            applied={requests[k].stream_id: r for k, r in results.items() if not isinstance(r, Exception)},
        )
        _fail(results, dict.fromkeys(pending, error), isolate)
    return [results[k] for k in range(len(requests))]


def _fail(results: dict[int, Result], errors: Mapping[int, RnnstreamError], isolate: bool) -> None:
    if errors and not isolate:
        raise next(iter(errors.values()))
    results.update(errors)


def _attempt(
    model: StreamModel,
    store: Store,
    codec: Codec,
    requests: Sequence[StepRequest],
    batch: list[Array],
    row_of: dict[int, int],
    pending: list[int],
    results: dict[int, Result],
    *,
    isolate: bool,
    check_finite: bool,
    check_limit: Callable[[int], None],
) -> list[int]:
    """One read-decide-compute-write round; returns the requests whose write met a conflict."""
    ids = [requests[k].stream_id for k in pending]
    records = store.load(ids)
    rows, steps, outputs = records.rows, records.steps, records.outputs  # ours to change (Store.load)
    exists = records.exists.tolist()  # Python values: indexing a list is ~10× faster than an array
    # The steady state: known streams taking their next steps, nothing to decide (or delete) per stream.
    steady = all(exists) and not any([(r := requests[k]).start or r.end or r.step_number is not None
                                      for k in pending])
    if steady:
        apply, new_streams = list(range(len(pending))), []  # positions in ``pending``
    else:
        apply = _decide(codec, requests, pending, rows, steps, outputs, exists, results, isolate)
        new_streams = [j for j in apply if not exists[j]]
    try:
        check_limit(len(new_streams))
    except StreamLimitError as error:
        _fail(results, {pending[j]: error for j in new_streams}, isolate)
        apply = [j for j in apply if exists[j]]
    if not apply:
        return []
    versions = records.versions
    apply, ys, new_rows = _compute(model, requests, batch, row_of, pending, apply, rows, results,
                                   isolate=isolate, check_finite=check_finite)
    if not apply:
        return []
    flat = codec.flatten(ys)  # (n, O)
    everyone = len(apply) == len(pending)
    if everyone:  # no gathers
        written = store.commit(ids, versions, new_rows, steps + 1, flat).tolist()
    else:
        written = store.commit([ids[j] for j in apply], versions[apply], new_rows, steps[apply] + 1, flat).tolist()
    outputs_of = codec.unflatten_rows(flat)
    if steady and everyone and all(written):
        results.update(zip(pending, outputs_of, strict=True))
        return []
    conflicts = []
    for row, j in enumerate(apply):
        k = pending[j]
        if not written[row]:
            conflicts.append(k)
            continue
        results[k] = outputs_of[row]
        if requests[k].end:
            store.delete(requests[k].stream_id)
    return conflicts


def _decide(
    codec: Codec,
    requests: Sequence[StepRequest],
    pending: list[int],
    rows: FloatArray,
    steps: IntArray,
    outputs: FloatArray,
    exists: list[bool],
    results: dict[int, Result],
    isolate: bool,
) -> list[int]:
    """Each request's fate: the positions in ``pending`` to step; a start zeroes its row and count, a
    retry of the last applied step gets its stored output, an unknown stream or a wrong number an error."""
    apply: list[int] = []
    errors: dict[int, RnnstreamError] = {}
    for j, k in enumerate(pending):
        request = requests[k]
        if request.start:  # a fresh stream, written over whatever the store holds
            rows[j], steps[j] = 0.0, 0
        elif request.must_exist and not exists[j]:
            errors[k] = StreamNotFoundError(
                f"unknown sequence {request.stream_id!r} (never started, ended, or expired): "
                "its first step must start it"
            )
            continue
        verdict = _order(request, int(steps[j]))
        if isinstance(verdict, StepOrderError):
            errors[k] = verdict
        elif verdict:
            apply.append(j)
        else:  # a retry of the last applied step: its stored output
            results[k] = codec.unflatten(outputs[j])
    _fail(results, errors, isolate)
    return apply


def _order(request: StepRequest, applied: int) -> bool | StepOrderError:
    """True: apply the step; False: it repeats the last applied step; or the error for a wrong number."""
    n = request.step_number
    if n is None or n == applied + 1:
        return True
    if n == applied and applied > 0:
        return False
    history = "it is new, or expired" if applied == 0 else f"it has applied {applied} steps"
    return StepOrderError(
        f"stream {request.stream_id!r} takes step number {applied + 1} next ({history}); got {n}",
        stream_id=request.stream_id,
        expected=applied + 1,
        received=n,
    )


def _compute(
    model: StreamModel,
    requests: Sequence[StepRequest],
    batch: list[Array],
    row_of: dict[int, int],
    pending: list[int],
    apply: list[int],
    rows: FloatArray,
    results: dict[int, Result],
    *,
    isolate: bool,
    check_finite: bool,
) -> tuple[list[int], Any, FloatArray]:
    """The engine call for ``apply``; when isolating, a request whose values the engine refuses
    (a token id out of range, NaN) is found by stepping alone, and the rest are stepped without it."""
    everyone = len(apply) == len(rows)  # the steady state: every loaded row steps, no gather needed
    in_order = len(apply) == len(batch[0])  # and every input row, in order: no gather either
    try:
        return apply, *_engine(model, batch, None if in_order else [row_of[pending[j]] for j in apply],
                               rows if everyone else rows[apply], check_finite)
    except InputError:
        if not isolate:
            raise
    survivors = []
    for j in apply:
        try:
            _engine(model, batch, [row_of[pending[j]]], rows[[j]], check_finite)
            survivors.append(j)
        except InputError as error:
            results[pending[j]] = InputError(f"stream {requests[pending[j]].stream_id!r}: {error}")
    if not survivors:
        return [], None, rows[:0]
    return survivors, *_engine(model, batch, [row_of[pending[j]] for j in survivors], rows[survivors], check_finite)


def _engine(
    model: StreamModel, batch: list[Array], picked: list[int] | None, rows: FloatArray, check_finite: bool
) -> tuple[Outputs, FloatArray]:
    # ``picked`` (None: all) is increasing and distinct, so as many as the batch has rows means all, in order.
    xs = [x if picked is None or len(picked) == len(x) else x[picked] for x in batch]
    state = State.adopt(rows, model.fingerprint)  # rows are this call's own (loaded or gathered)
    ys, new_state = model.step(xs[0] if len(xs) == 1 else xs, state, check_finite=check_finite)
    return ys, new_state.rows
