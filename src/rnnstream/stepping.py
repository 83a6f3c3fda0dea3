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
from typing import Any

import numpy as np

from rnnstream.batch_inputs import stack_inputs
from rnnstream.errors import (
    ConflictError,
    InputError,
    RnnstreamError,
    StepOrderError,
    StreamEndedError,
    StreamLimitError,
    StreamNotFoundError,
)
from rnnstream.model import StreamModel
from rnnstream.state import State
from rnnstream.step_request import Result, StepRequest, all_plain
from rnnstream.stores import Store
from rnnstream.types import Array, FloatArray, Outputs

logger = logging.getLogger(__name__)

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
class Batch:
    """One ``advance`` call: its requests, their stacked inputs (``row_of``: request → input row), and the
    result of each request settled so far (by position in ``requests``)."""

    model: StreamModel
    store: Store
    codec: Codec
    requests: Sequence[StepRequest]
    inputs: list[Array]
    row_of: dict[int, int]
    isolate: bool
    max_streams: int | None
    results: dict[int, Result] = field(default_factory=dict)

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
    batch = Batch(model, store, codec, requests, inputs, {k: row for row, k in enumerate(ok)}, isolate, max_streams)
    batch.fail(input_errors)
    pending = ok
    for _ in range(conflict_retries + 1):
        if not pending:
            break
        pending = Round(batch, pending).run()
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


class Round:
    """One read-decide-compute-write round over ``pending`` (positions in the batch's requests).

    Within a round, a request is named by ``j``, its position in ``pending`` (and in the loaded records);
    ``self.requests[j]`` is its request. The round steps the positions it ``apply``-s, in order.
    """

    def __init__(self, batch: Batch, pending: list[int]) -> None:
        self.batch, self.pending = batch, pending
        self.requests = [batch.requests[k] for k in pending]
        self.ids = [r.stream_id for r in self.requests]
        self.records = batch.store.load(self.ids)  # its arrays are ours to change (Store.load)
        self.live = self.records.exists.tolist()  # Python values: indexing a list is ~10× faster than an array
        # The steady state: live streams taking their next steps, nothing to decide (or end) per stream.
        self.steady = all(self.live) and all_plain(self.requests)
        self.reserved: set[str] = set()

    def run(self) -> list[int]:
        """Step what may be stepped; returns the requests (positions in the batch) whose write met a conflict."""
        apply = self.admit(list(range(len(self.pending))) if self.steady else self.decide())
        try:
            apply, ys, new_rows = self.compute(apply)
            self.store_release(self.reserved - {self.ids[j] for j in apply})  # admitted, then refused
            if not apply:
                return []
            flat = self.batch.codec.flatten(ys)  # (n, O)
            written = self.write(apply, new_rows, flat)
        except BaseException:
            self.store_release(self.reserved)  # nothing of this round was written
            raise
        return self.settle(apply, written, flat)

    def store_release(self, ids: set[str]) -> None:
        if ids:
            self.batch.store.release(sorted(ids))

    def decide(self) -> list[int]:
        """Each request's fate (see the module docstring): the positions to step. A start, or a new stream,
        gets the initial state and a count of 0; a retry its stored output; a wrong number, a late start
        or an unknown sequence its error."""
        records = self.records
        held, ended = (records.versions > 0).tolist(), records.ended.tolist()
        apply: list[int] = []
        errors: dict[int, RnnstreamError] = {}
        for j, request in enumerate(self.requests):
            k, applied = self.pending[j], int(records.steps[j])
            n, live = request.step_number, held[j] and not ended[j]
            if n is not None and held[j] and n == applied > 0:  # a retry of the last applied step
                self.batch.results[k] = self.batch.codec.unflatten(records.outputs[j])
                continue
            if request.start:
                if n is not None and live and applied > 0:
                    errors[k] = late_start(request, n, applied)
                    continue
                records.rows[j], records.steps[j], applied = 0.0, 0, 0
            elif not live:
                if request.must_exist:
                    errors[k] = unknown_sequence(request, applied, ended=ended[j])
                    continue
                records.steps[j], applied = 0, 0  # an ended record: the stream begins again from the initial state
            verdict = order(request, applied)
            if isinstance(verdict, StepOrderError):
                errors[k] = verdict
            else:
                apply.append(j)
        self.batch.fail(errors)
        return apply

    def admit(self, apply: list[int]) -> list[int]:
        """Reserve room in the store for the new streams of ``apply`` under ``max_streams``; the ones
        refused get a StreamLimitError (when not isolating, the call fails and nothing stays reserved).
        Returns the positions still to step."""
        new = [self.ids[j] for j in apply if not self.live[j]]
        batch = self.batch
        if not new or batch.max_streams is None:
            return apply
        admitted = batch.store.admit(new, batch.max_streams)
        self.reserved = {stream_id for stream_id, ok in zip(new, admitted, strict=True) if ok}
        refused = set(new) - self.reserved
        if refused:
            if not batch.isolate:
                self.store_release(self.reserved)
            error = StreamLimitError(
                f"starting {len(refused)} new stream(s) would exceed max_streams={batch.max_streams}; close idle "
                "streams, set a ttl, or raise max_streams"
            )
            batch.fail({self.pending[j]: error for j in apply if self.ids[j] in refused})
        return [j for j in apply if self.live[j] or self.ids[j] in self.reserved]

    def compute(self, apply: list[int]) -> tuple[list[int], Any, FloatArray]:
        """The engine call for ``apply``: the positions stepped, their outputs and new state rows. When
        isolating, a request the engine refuses (or fails on) is found by stepping each alone, and the rest
        are stepped without it."""
        rows = self.records.rows
        if not apply:
            return [], None, rows[:0]
        everyone = len(apply) == len(rows)  # the steady state: every loaded row steps, no gather needed
        in_order = len(apply) == len(self.batch.inputs[0])  # and every input row, in order: no gather either
        try:
            return apply, *self.engine(None if in_order else apply, rows if everyone else rows[apply])
        except Exception:
            if not self.batch.isolate:
                raise
        survivors = [j for j in apply if self.steps_alone(j)]
        if not survivors:
            return [], None, rows[:0]
        return survivors, *self.engine(survivors, rows[survivors])

    def steps_alone(self, j: int) -> bool:
        """Whether request ``j`` steps on its own; if not, its error is its result."""
        k, stream_id = self.pending[j], self.ids[j]
        try:
            self.engine([j], self.records.rows[[j]])
            return True
        except InputError as error:
            self.batch.results[k] = type(error)(f"stream {stream_id!r}: {error}")
        except RnnstreamError as error:
            self.batch.results[k] = error
        except Exception as error:  # a bug: this request fails, with the others stepped without it
            logger.exception("the engine failed on stream %r alone", stream_id)
            self.batch.results[k] = RnnstreamError(f"internal error stepping stream {stream_id!r}: {error!r}")
        return False

    def engine(self, picked: list[int] | None, rows: FloatArray) -> tuple[Outputs, FloatArray]:
        """One engine call: the input rows of positions ``picked`` (None: every input row, in order) from
        state ``rows`` (this call's own: loaded or gathered)."""
        inputs = self.batch.inputs
        if picked is not None:
            picked_rows = [self.batch.row_of[self.pending[j]] for j in picked]
            inputs = [x if len(picked_rows) == len(x) else x[picked_rows] for x in inputs]
        state = State.adopt(rows, self.batch.model.fingerprint)
        ys, new_state = self.batch.model.step(inputs, state, checked=True)  # checked by stack_inputs
        return ys, new_state.rows

    def write(self, apply: list[int], new_rows: FloatArray, flat: FloatArray) -> list[bool]:
        """Compare-and-set the new rows of ``apply``; an ending step writes an ended record."""
        records, store = self.records, self.batch.store
        ending = np.array([self.requests[j].end for j in apply], bool)
        if len(apply) == len(self.pending):  # no gathers
            written = store.commit(self.ids, records.versions, new_rows, records.steps + 1, flat,
                                   None if self.steady else ending)
        else:
            written = store.commit([self.ids[j] for j in apply], records.versions[apply], new_rows,
                                   records.steps[apply] + 1, flat, ending)
        return list(written.tolist())

    def settle(self, apply: list[int], written: list[bool], flat: FloatArray) -> list[int]:
        """Each written request's outputs are its result; returns the requests that met a conflict."""
        outputs_of = self.batch.codec.unflatten_rows(flat)
        if self.steady and all(written):
            self.batch.results.update(zip(self.pending, outputs_of, strict=True))
            return []
        conflicts = []
        for row, j in enumerate(apply):
            if written[row]:
                self.batch.results[self.pending[j]] = outputs_of[row]
            else:
                conflicts.append(self.pending[j])
        return conflicts


def late_start(request: StepRequest, n: int, applied: int) -> StepOrderError:
    """The error of a numbered start on a live stream that has applied steps since (a late duplicate)."""
    return StepOrderError(
        f"stream {request.stream_id!r} has applied {applied} steps since it started: a start "
        f"numbered {n} now would discard them (a late duplicate?); its next step is "
        f"{applied + 1}. To begin again, end it (sequence_end) or use a new sequence id",
        stream_id=request.stream_id, expected=applied + 1, received=n,
    )


def unknown_sequence(request: StepRequest, applied: int, *, ended: bool) -> StreamNotFoundError:
    """The error of a step that must continue a stream the store does not hold (or holds as ended)."""
    if ended:
        return StreamEndedError(f"sequence {request.stream_id!r} ended after step {applied}; a new sequence "
                                   "with this id begins with sequence_start")
    return StreamNotFoundError(f"unknown sequence {request.stream_id!r} (never started, ended, or expired): "
                               "its first step must start it")


def order(request: StepRequest, applied: int) -> bool | StepOrderError:
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
