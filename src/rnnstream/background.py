"""Steady-state batches whose engine call runs in the background, for a server's event loop.

A batch of plain next steps (no start, end or step number) of streams that all exist in an
in-process store is read, launched and written back by the caller's own thread, while the step
itself runs on the compiled kernel's runner thread (:meth:`StreamModel.launch`): no Python worker
thread has to win the GIL back from a busy event loop. Anything else — a new stream, an input error,
a store over the network, a model the kernel cannot launch — is not begun here (``begin`` returns
None) and takes :meth:`Streams.step_each`.

>>> import os, numpy as np, rnnstream
>>> streams = rnnstream.Streams(rnnstream.load(rnnstream.demo.SEED_MODEL))
>>> first = streams.step_each([StepRequest("a", np.zeros(4, np.float32), start=True)])
>>> read, write = os.pipe()
>>> batch = begin(streams, [StepRequest("a", np.ones(4, np.float32))], write)
>>> if batch is not None:
...     _ = os.read(read, 8)
...     (y,), conflicts = batch.finish()
...     assert y.shape == (1,) and conflicts == []
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rnnstream.batch_inputs import stack_inputs
from rnnstream.model import Outputs, PendingStep
from rnnstream.state import State
from rnnstream.step_request import StepRequest, all_plain
from rnnstream.streams import Streams
from rnnstream.types import IntArray


@dataclass
class SteadyBatch:
    """A launched steady-state batch: ``done()``, then ``finish()`` writes it back."""

    streams: Streams
    ids: list[str]
    versions: IntArray
    steps: IntArray
    pending: PendingStep

    def done(self) -> bool:
        return self.pending.done()

    def finish(self) -> tuple[list[Outputs | None], list[int]]:
        """Write the new states; returns each request's outputs (None where not written) and the
        positions of the requests whose stream changed meanwhile (not applied: step them again)."""
        ys, new_state = self.pending.result()
        codec = self.streams.codec
        flat = codec.flatten(ys)  # (n, O)
        written = self.streams.store.commit(self.ids, self.versions, new_state.rows, self.steps + 1, flat).tolist()
        outputs: list[Outputs | None] = list(codec.unflatten_rows(flat))
        if all(written):
            return outputs, []
        conflicts = [k for k, ok in enumerate(written) if not ok]
        for k in conflicts:
            outputs[k] = None
        return outputs, conflicts


def can_begin(streams: Streams) -> bool:
    """Whether ``streams`` can take steady-state batches here: an in-process store and a model whose
    step can be launched."""
    return streams.store.in_process and streams.model.can_launch


def begin(
    streams: Streams,
    requests: Sequence[StepRequest],
    fd: int,
    threads: int | None = None,
    *,
    check_finite: bool = False,
) -> SteadyBatch | None:
    """Read and launch ``requests`` when every one is a plain next step of a stream the store holds;
    None (nothing read or started) otherwise. ``fd`` gets 8 bytes when the step is done; ``threads``:
    how many of the engine's threads share it (default all); ``check_finite``: a NaN or ±Inf input is not
    begun here either (``step_each`` refuses that request alone)."""
    if not can_begin(streams) or not requests:
        return None
    if not all_plain(requests):
        return None
    ids = [r.stream_id for r in requests]
    if len(set(ids)) != len(ids):
        return None  # step_each says which
    batch, errors = stack_inputs(streams.model, requests, check_finite=check_finite)
    if errors:
        return None
    records = streams.store.load(ids)
    if not records.exists.all():
        return None
    state = State.adopt(records.rows, streams.model.fingerprint)  # the loaded rows are ours (Store.load)
    pending = streams.model.launch(batch, state, fd, threads, checked=True)  # checked by stack_inputs
    return SteadyBatch(streams, ids, records.versions, records.steps, pending)
