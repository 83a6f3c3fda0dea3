"""One batched step of many streams: read their records, decide per stream, one engine call, write back.

``advance`` serves both ``Streams.step`` (any error fails the whole call, before anything is written)
and ``Streams.step_each`` (``isolate=True``: a request's error is that request's result, and the
others go ahead), which the server's batcher uses.

Exactly-once (requests with a ``step_number``; the first step of a stream is 1):

- the number of the stream's last applied step is a retry: its stored output, nothing changes — a start
  step and an ending step too (an ended stream's last step and output are kept for the store's
  ``end_retention``);
- a start numbered 1 on a live stream that has applied steps since is refused (StepOrderError): it is a
  late duplicate, and applying it would discard acknowledged steps (end the stream first, or use a new id);
- any other number but the next is refused (StepOrderError, with the number expected).

Everything is decided before the engine runs, so a refused request changes nothing. Without step numbers
a start always begins the stream afresh (Triton's semantics).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from rnnstream.batch_inputs import stack_inputs
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
from rnnstream.stores.base import Records
from rnnstream.types import Array, FloatArray

logger = logging.getLogger(__name__)

Result = Outputs | RnnstreamError


class StepRequest(NamedTuple):
    """One step of one stream (a named tuple: the server makes one per request, and a frozen dataclass costs
    three times as much to make).

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


@dataclass
class _Batch:
    """One ``advance`` call: its requests, their stacked inputs (``row_of``: request → row) and results."""

    model: StreamModel
    store: Store
    codec: Codec
    requests: Sequence[StepRequest]
    inputs: list[Array]
    row_of: dict[int, int]
    results: dict[int, Result]
    isolate: bool
    max_streams: int | None

    def fail(self, errors: Mapping[int, RnnstreamError]) -> None:
        """Record each request's error; when not isolating, the first one fails the whole call."""
        if errors and not self.isolate:
            raise next(iter(errors.values()))
        self.results.update(errors)


def advance(
    model: StreamModel,
    store: Store,
    codec: Codec,
    requests: Sequence[StepRequest],
    *,
    isolate: bool,
    check_finite: bool,
    max_streams: int | None,
    conflict_retries: int,
) -> list[Result]:
    """Step every request's stream once (see the module docstring); one result per request."""
    inputs, input_errors = stack_inputs(model, requests, check_finite=check_finite)
    ok = [k for k in range(len(requests)) if k not in input_errors]
    batch = _Batch(model, store, codec, requests, inputs, {k: row for row, k in enumerate(ok)}, {}, isolate,
                   max_streams)
    batch.fail(input_errors)
    pending = ok
    for _ in range(conflict_retries + 1):
        if not pending:
            break
        pending = _attempt(batch, pending)
    if pending:
        conflicted = [requests[k].stream_id for k in pending]
        error = ConflictError(
            f"streams {conflicted} were advanced by another process during each of {conflict_retries + 1} "
            "attempts; retry the call (with step numbers it is safe)",
            stream_ids=conflicted,
            applied={requests[k].stream_id: r for k, r in batch.results.items() if not isinstance(r, Exception)},
        )
        batch.fail(dict.fromkeys(pending, error))
    return [batch.results[k] for k in range(len(requests))]


def _attempt(batch: _Batch, pending: list[int]) -> list[int]:
    """One read-decide-compute-write round over ``pending`` (positions in the requests); returns the
    requests whose write met a conflict."""
    requests, store = batch.requests, batch.store
    ids = [requests[k].stream_id for k in pending]
    records = store.load(ids)  # its arrays are ours to change (Store.load)
    live = records.exists.tolist()  # Python values: indexing a list is ~10× faster than an array
    # The steady state: live streams taking their next steps, nothing to decide (or end) per stream.
    steady = all(live) and not any([(r := requests[k]).start or r.end or r.step_number is not None for k in pending])
    apply = list(range(len(pending))) if steady else _decide(batch, pending, records)  # positions in ``pending``
    new = [ids[j] for j in apply if not live[j]]
    reserved = _admit(batch, pending, apply, new)
    if batch.max_streams is not None and new:
        apply = [j for j in apply if live[j] or ids[j] in reserved]
    try:
        apply, ys, new_rows = _compute(batch, pending, apply, records.rows)
        if not apply:
            store.release(sorted(reserved))
            return []
        if reserved:
            store.release(sorted(reserved - {ids[j] for j in apply}))  # admitted, then refused by the engine
        ending = np.array([requests[pending[j]].end for j in apply], bool)
        flat = batch.codec.flatten(ys)  # (n, O)
        if len(apply) == len(pending):  # no gathers
            written = store.commit(ids, records.versions, new_rows, records.steps + 1, flat,
                                   ending if not steady else None).tolist()
        else:
            written = store.commit([ids[j] for j in apply], records.versions[apply], new_rows,
                                   records.steps[apply] + 1, flat, ending).tolist()
    except BaseException:
        store.release(sorted(reserved))  # nothing of this round was written
        raise
    outputs_of = batch.codec.unflatten_rows(flat)
    if steady and all(written):
        batch.results.update(zip(pending, outputs_of, strict=True))
        return []
    conflicts = []
    for row, j in enumerate(apply):
        if written[row]:
            batch.results[pending[j]] = outputs_of[row]
        else:
            conflicts.append(pending[j])
    return conflicts


def _admit(batch: _Batch, pending: list[int], apply: list[int], new: list[str]) -> set[str]:
    """Reserve room in the store for the new streams of ``apply`` under ``max_streams`` and return the ids
    reserved; the ones refused get a StreamLimitError (when not isolating, the call fails and nothing
    stays reserved)."""
    if not new or batch.max_streams is None:
        return set()
    admitted = batch.store.admit(new, batch.max_streams)
    refused = {stream_id for stream_id, ok in zip(new, admitted, strict=True) if not ok}
    if refused:
        if not batch.isolate:
            batch.store.release([i for i, ok in zip(new, admitted, strict=True) if ok])
        error = StreamLimitError(
            f"starting {len(refused)} new stream(s) would exceed max_streams={batch.max_streams}; close idle "
            "streams, set a ttl, or raise max_streams"
        )
        batch.fail({pending[j]: error for j in apply if batch.requests[pending[j]].stream_id in refused})
    return {stream_id for stream_id, ok in zip(new, admitted, strict=True) if ok}


def _decide(batch: _Batch, pending: list[int], records: Records) -> list[int]:
    """Each request's fate (see the module docstring): the positions in ``pending`` to step. A start, or a
    new stream, gets the initial state and a count of 0; a retry its stored output; a wrong number, a late
    start or an unknown sequence its error."""
    rows, steps, ended = records.rows, records.steps, records.ended.tolist()
    held = (records.versions > 0).tolist()
    apply: list[int] = []
    errors: dict[int, RnnstreamError] = {}
    for j, k in enumerate(pending):
        request, applied = batch.requests[k], int(steps[j])
        n, live = request.step_number, held[j] and not ended[j]
        if n is not None and held[j] and n == applied > 0:  # a retry of the last applied step
            batch.results[k] = batch.codec.unflatten(records.outputs[j])
            continue
        if request.start:
            if n is not None and live and applied > 0:
                errors[k] = StepOrderError(
                    f"stream {request.stream_id!r} has applied {applied} steps since it started: a start "
                    f"numbered {n} now would discard them (a late duplicate?); its next step is {applied + 1}. "
                    "To begin again, end it (sequence_end) or use a new sequence id",
                    stream_id=request.stream_id, expected=applied + 1, received=n,
                )
                continue
            rows[j], steps[j], applied = 0.0, 0, 0
        elif not live:
            if request.must_exist:
                errors[k] = StreamNotFoundError(
                    f"sequence {request.stream_id!r} ended after step {applied}; a new sequence with this id begins "
                    "with sequence_start" if ended[j] else
                    f"unknown sequence {request.stream_id!r} (never started, ended, or expired): "
                    "its first step must start it"
                )
                continue
            steps[j], applied = 0, 0  # an ended record: the stream begins again from the initial state
        verdict = _order(request, applied)
        if isinstance(verdict, StepOrderError):
            errors[k] = verdict
        else:
            apply.append(j)
    batch.fail(errors)
    return apply


def _order(request: StepRequest, applied: int) -> bool | StepOrderError:
    """True to apply the step, or the error for a number that is not the next."""
    n = request.step_number
    if n is None or n == applied + 1:
        return True
    history = "it is new, or expired" if applied == 0 else f"it has applied {applied} steps"
    return StepOrderError(
        f"stream {request.stream_id!r} takes step number {applied + 1} next ({history}); got {n}",
        stream_id=request.stream_id,
        expected=applied + 1,
        received=n,
    )


def _compute(
    batch: _Batch, pending: list[int], apply: list[int], rows: FloatArray
) -> tuple[list[int], Any, FloatArray]:
    """The engine call for ``apply``. When isolating, a request the engine refuses (or fails on) is found by
    stepping each alone, and the rest are stepped without it."""
    if not apply:
        return [], None, rows[:0]
    everyone = len(apply) == len(rows)  # the steady state: every loaded row steps, no gather needed
    in_order = len(apply) == len(batch.inputs[0])  # and every input row, in order: no gather either
    try:
        return apply, *_engine(batch, None if in_order else [batch.row_of[pending[j]] for j in apply],
                               rows if everyone else rows[apply])
    except Exception:
        if not batch.isolate:
            raise
    survivors = []
    for j in apply:
        k = pending[j]
        try:
            _engine(batch, [batch.row_of[k]], rows[[j]])
            survivors.append(j)
        except RnnstreamError as error:
            batch.results[k] = type(error)(f"stream {batch.requests[k].stream_id!r}: {error}") \
                if isinstance(error, InputError) else error
        except Exception as error:  # a bug: this request fails, with the others stepped without it
            logger.exception("the engine failed on stream %r alone", batch.requests[k].stream_id)
            batch.results[k] = RnnstreamError(f"internal error stepping stream {batch.requests[k].stream_id!r}: "
                                              f"{error!r}")
    if not survivors:
        return [], None, rows[:0]
    return survivors, *_engine(batch, [batch.row_of[pending[j]] for j in survivors], rows[survivors])


def _engine(batch: _Batch, picked: list[int] | None, rows: FloatArray) -> tuple[Outputs, FloatArray]:
    # ``picked`` (None: all) is increasing and distinct, so as many as the batch has rows means all, in order.
    xs = [x if picked is None or len(picked) == len(x) else x[picked] for x in batch.inputs]
    state = State.adopt(rows, batch.model.fingerprint)  # rows are this call's own (loaded or gathered)
    ys, new_state = batch.model.step(xs[0] if len(xs) == 1 else xs, state)
    return ys, new_state.rows
