"""One batched step of many streams: read their records, decide per stream, one engine call, write back.

``advance`` serves both ``Streams.step`` (any error fails the whole call, before anything is written)
and ``Streams.step_each`` (``isolate=True``: a request's error is that request's result, and the
others go ahead), which the server's batcher uses.

Exactly-once (requests with a ``step_number``; the first step of a stream is 1):

- the number of the stream's last applied step is a retry: its stored output, nothing changes — a start
  step and an ending step too (an ended stream's last step and output are kept for the store's
  ``end_retention``); the answer waits, like a write, until the store keeps the record as durably as its
  writes (``Store.confirm``: with Redis ``?replicas=N``, until N replicas have it);
- a start numbered 1 on a live stream that has applied steps since is refused (StepOrderError): it is a
  late duplicate, and applying it would discard acknowledged steps (end the stream first, or use a new id);
- any other number but the next is refused (StepOrderError, with the number expected).

Everything is decided before the engine runs, so a refused request changes nothing. Without step numbers
a start always begins the stream afresh (Triton's semantics).

A history request (``steps=T``, rnnstream.history) covers steps n … n+T-1 of its stream and counts T: it is
a retry when n+T-1 is the last applied step, and its stored answer is its last step's outputs, or all T
(``all_outputs``: the store keeps the whole answer). It steps alone, with ``StreamModel.run``, in the same
round as the single steps beside it (decided, then written with them).
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
    ReplicationError,
    RnnstreamError,
    StepOrderError,
    StreamEndedError,
    StreamLimitError,
    StreamNotFoundError,
)
from rnnstream.history import cast_histories, run_history, stored_steps
from rnnstream.model import StreamModel
from rnnstream.output_codec import Codec
from rnnstream.state import State
from rnnstream.step_request import Result, StepRequest, all_plain
from rnnstream.stores import Store
from rnnstream.types import Array, FloatArray, Outputs

logger = logging.getLogger(__name__)

@dataclass
class Batch:
    """One ``advance`` call: its requests, their stacked inputs (``row_of``: request → input row), the inputs
    of its history requests (``histories``: request → one ``[T, *features]`` array per input), and the
    result of each request settled so far (by position in ``requests``)."""

    model: StreamModel
    store: Store
    codec: Codec
    requests: Sequence[StepRequest]
    inputs: list[Array]
    row_of: dict[int, int]
    isolate: bool
    max_streams: int | None
    histories: dict[int, list[Array]] = field(default_factory=dict)
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
    histories: dict[int, list[Array]] = {}
    if not any([r.steps is not None for r in requests]):  # a list: faster than a generator at a batch's size
        inputs, input_errors = stack_inputs(model, requests, check_finite=check_finite)
    else:
        singles = [k for k, r in enumerate(requests) if r.steps is None]
        inputs, errors = stack_inputs(model, [requests[k] for k in singles], check_finite=check_finite) \
            if singles else ([], {})
        input_errors = {singles[i]: error for i, error in errors.items()}
        histories, errors = cast_histories(model, requests, [k for k, r in enumerate(requests) if r.steps is not None],
                                           check_finite=check_finite)
        input_errors.update(errors)
    ok = [k for k in range(len(requests)) if k not in input_errors and k not in histories]
    batch = Batch(model, store, codec, requests, inputs, {k: row for row, k in enumerate(ok)}, isolate, max_streams,
                  histories)
    batch.fail(input_errors)
    ok = [k for k in range(len(requests)) if k not in input_errors]
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
        self.retried: list[int] = []  # positions answered from their stored record
        self.failed: set[int] = set()  # positions whose records the store could not make durable: not answered
        self.answers: dict[int, FloatArray] = {}  # j → the (T, O) answer of a history request asking for all

    def run(self) -> list[int]:
        """Step what may be stepped; returns the requests (positions in the batch) whose write met a conflict."""
        apply = self.admit(list(range(len(self.pending))) if self.steady else self.decide())
        try:
            apply, flat, new_rows = self.compute(apply)  # flat: (n, O)
            self.store_release(self.reserved - {self.ids[j] for j in apply})  # admitted, then refused
            if self.retried:
                self.confirm_retries()
            if not apply:
                return []
            written = self.write(apply, new_rows, flat)
        except BaseException:
            self.store_release(self.reserved)  # nothing of this round was written
            raise
        return self.settle(apply, written, flat)

    def confirm_retries(self) -> None:
        """Wait until the records the retries are answered from are as durable as a write would be."""
        try:
            self.batch.store.confirm([self.ids[j] for j in self.retried])
        except ReplicationError as error:
            self.unconfirmed(error, self.retried)

    def unconfirmed(self, error: ReplicationError, positions: list[int]) -> None:
        """The requests among ``positions`` whose records ``error`` names get it as their result (a
        retryable 503): neither answered nor tried again. When not isolating, the call fails with it."""
        named = set(error.stream_ids)
        if not self.batch.isolate or not named:
            raise error
        failing = [j for j in positions if self.ids[j] in named]
        self.failed.update(failing)
        self.batch.results.update({self.pending[j]: error for j in failing})

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
            if n is not None and held[j] and applied > 0 and n + (request.steps or 1) - 1 == applied:  # a retry
                answer = self.stored_answer(j, request)
                if isinstance(answer, RnnstreamError):
                    errors[k] = answer
                    continue
                self.batch.results[k] = answer
                self.retried.append(j)
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

    def stored_answer(self, j: int, request: StepRequest) -> Outputs | StepOrderError:
        """The stored answer of a retried request: its last step's outputs, or (a history request asking
        for all) its T steps' outputs, if the store kept them."""
        records, codec = self.records, self.batch.codec
        if request.steps is None or not request.all_outputs:
            return codec.unflatten(records.outputs[j])
        answer = stored_steps(request, int(records.steps[j]), records.outputs[j], records.answers.get(j))
        return answer if isinstance(answer, StepOrderError) else codec.unflatten_steps(answer)

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

    def compute(self, apply: list[int]) -> tuple[list[int], FloatArray, FloatArray]:
        """The engine calls for ``apply``: the positions stepped (in order), their flattened outputs ``(n, O)``
        (a history request's last step's) and their new state rows: one call for the single steps, one run
        for each history request."""
        if not self.batch.histories:
            stepped, ys, rows = self.compute_steps(apply)
            return stepped, self.batch.codec.flatten(ys) if stepped else self.records.outputs[:0], rows
        singles = [j for j in apply if self.requests[j].steps is None]
        stepped, ys, rows = self.compute_steps(singles)
        flat = self.batch.codec.flatten(ys) if stepped else self.records.outputs[:0]
        primed, last, primed_rows = self.compute_histories([j for j in apply if self.requests[j].steps is not None])
        done = stepped + primed
        order = np.argsort(done, kind="stable")
        return [done[i] for i in order.tolist()], np.concatenate([flat, last])[order], \
            np.concatenate([rows, primed_rows])[order]

    def compute_histories(self, histories: list[int]) -> tuple[list[int], FloatArray, FloatArray]:
        """Each history request's run from its stream's row: the positions run, their last outputs ``(n, O)``
        and new rows ``(n, S)``; a failure fails its own request when isolating."""
        codec, done, last, rows = self.batch.codec, [], [], []
        for j in histories:
            try:
                ys, row = run_history(self.batch.model, self.records.rows[[j]],
                                      self.batch.histories[self.pending[j]])
            except Exception as error:
                if not self.batch.isolate:
                    raise
                self.fail_alone(j, error)
                continue
            flat = codec.flatten(ys)  # (T, O)
            if self.requests[j].all_outputs:
                self.answers[j] = flat
            done.append(j)
            last.append(flat[-1])
            rows.append(row[0])
        width, size = sum(codec.sizes), self.records.rows.shape[1]
        return done, np.array(last, np.float32).reshape(len(done), width), \
            np.array(rows, np.float32).reshape(len(done), size)

    def compute_steps(self, apply: list[int]) -> tuple[list[int], Any, FloatArray]:
        """The engine call for the single steps ``apply``: the positions stepped, their outputs and new
        state rows. When isolating, a request the engine refuses (or fails on) is found by stepping each
        alone, and the rest are stepped without it."""
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
        try:
            self.engine([j], self.records.rows[[j]])
            return True
        except Exception as error:
            self.fail_alone(j, error)
        return False

    def fail_alone(self, j: int, error: Exception) -> None:
        """``error``, raised by the engine on request ``j`` alone, is its result."""
        k, stream_id = self.pending[j], self.ids[j]
        if isinstance(error, InputError):
            self.batch.results[k] = type(error)(f"stream {stream_id!r}: {error}")
        elif isinstance(error, RnnstreamError):
            self.batch.results[k] = error
        else:  # a bug: this request fails, with the others stepped without it
            logger.error("the engine failed on stream %r alone", stream_id, exc_info=error)
            self.batch.results[k] = RnnstreamError(f"internal error stepping stream {stream_id!r}: {error!r}")

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
        counts = np.array([self.requests[j].steps or 1 for j in apply], np.int64) if self.batch.histories else 1
        answers = {row: self.answers[j] for row, j in enumerate(apply) if j in self.answers} if self.answers else {}
        kept = {"answers": answers} if answers else {}  # only then: a store written before histories still fits
        try:
            if len(apply) == len(self.pending):  # no gathers
                written = store.commit(self.ids, records.versions, new_rows, records.steps + counts, flat,
                                       None if self.steady else ending, **kept)
            else:
                written = store.commit([self.ids[j] for j in apply], records.versions[apply], new_rows,
                                       records.steps[apply] + counts, flat, ending, **kept)
        except ReplicationError as error:  # some masters heard from too few replicas: their steps fail
            self.unconfirmed(error, apply)
            return [error.written.get(self.ids[j], False) for j in apply]
        return list(written.tolist())

    def settle(self, apply: list[int], written: list[bool], flat: FloatArray) -> list[int]:
        """Each written request's outputs are its result; returns the requests that met a conflict."""
        outputs_of = self.batch.codec.unflatten_rows(flat)
        if self.steady and all(written) and not self.failed:
            self.batch.results.update(zip(self.pending, outputs_of, strict=True))
            return []
        conflicts = []
        for row, j in enumerate(apply):
            if j in self.failed:
                continue
            if written[row]:
                answer = self.answers.get(j)
                self.batch.results[self.pending[j]] = outputs_of[row] if answer is None else \
                    self.batch.codec.unflatten_steps(answer)
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
