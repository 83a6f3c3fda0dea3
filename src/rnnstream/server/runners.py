"""What runs a batch the batcher formed: a worker thread, or a launch from the loop. One interface:
``run(batch)`` takes the batch (or returns False: not one this runner takes) and reports a :class:`Finish`.

**WorkerRunner** steps batches with ``Streams.step_each`` on one thread, in order, at most ``PIPELINE``
handed over at once: while it steps one batch, the next is formed and queued behind it. A stream's later
step, even in the next batch, is read only after its earlier one is written. Without this, the worker sat
idle from the end of each batch until the event loop, busy with sockets, got round to sending it the next:
measured with 1,000 WebSocket streams of the seed model, the engine call took 2.9 ms of each 4.9 ms.

**LaunchRunner** skips the worker for steady-state batches (rnnstream.background): with an in-process
store and a model the fused kernel steps whole, a batch of plain next steps of held streams is read,
launched and written back on the loop, while its step runs on the kernel's runner thread, which
announces the end on a pipe the loop watches. A Python worker that released the GIL for the kernel had
to win it back from the loop, and lost until the loop ran out of work (1.3 ms of Python took 5.8 ms per
batch). A step whose stream was changed meanwhile (a reset, another writer) is reported not applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple, Protocol

from rnnstream.background import SteadyBatch, begin, can_begin
from rnnstream.errors import RnnstreamError
from rnnstream.server.batch_policy import Waiting
from rnnstream.server.loop_load import LoopLoad, engine_threads
from rnnstream.step_request import Result, StepRequest
from rnnstream.streams import Streams

PIPELINE = 2
"""Batches handed to the worker thread at once: the one it steps and the next, ready when it is done."""


class Finish(NamedTuple):
    """A batch that has run: one result per request (None: not applied, its stream changed meanwhile;
    step it again), when its engine call started (None: it failed as a whole) and how long it took."""

    batch: list[Waiting]
    results: Sequence[Result | None]
    started: float | None
    seconds: float


Finished = Callable[[Finish], None]


class Runner(Protocol):
    def run(self, batch: list[Waiting]) -> bool:
        """Begin ``batch`` (it is reported to ``finished`` when it has run); False if this runner does not
        take it."""
        ...

    def close(self) -> None:
        """Release the runner's thread or pipe (every batch it took has been reported)."""
        ...


def as_error(error: BaseException) -> RnnstreamError:
    """A failure of a whole batch as each request's result (a bug's message is not shown to clients)."""
    return error if isinstance(error, RnnstreamError) else RnnstreamError(f"internal error: {error!r}")


class WorkerRunner:
    """``Streams.step_each`` on one worker thread, batches in order."""

    def __init__(self, streams: Streams, name: str, finished: Finished, *, check_finite: bool) -> None:
        self.streams, self.finished, self.check_finite = streams, finished, check_finite
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"rnnstream-{name}")

    def run(self, batch: list[Waiting]) -> bool:
        job = asyncio.get_running_loop().run_in_executor(self.executor, self.step, [w.request for w in batch])

        def report(job: asyncio.Future[tuple[list[Result], float, float]]) -> None:
            error = job.exception()
            if error is None:
                results, started, seconds = job.result()
                self.finished(Finish(batch, results, started, seconds))
            else:  # the store or the engine failed for the whole batch
                self.finished(Finish(batch, [as_error(error)] * len(batch), None, 0.0))

        job.add_done_callback(report)
        return True

    def step(self, requests: list[StepRequest]) -> tuple[list[Result], float, float]:
        """On the worker thread: one engine call, when it started and how long it took."""
        started = time.perf_counter()
        results = self.streams.step_each(requests, check_finite=self.check_finite)
        return results, started, time.perf_counter() - started

    def close(self) -> None:
        self.executor.shutdown(wait=True)


class Launch(NamedTuple):
    steady: SteadyBatch
    batch: list[Waiting]
    started: float


class LaunchRunner:
    """Steady-state batches launched from the loop onto the kernel's runner thread (rnnstream.background)."""

    def __init__(self, streams: Streams, finished: Finished, *, check_finite: bool) -> None:
        self.streams, self.finished, self.check_finite = streams, finished, check_finite
        self.engine_threads = streams.model.backend.threads
        self.loop_load = LoopLoad()  # launched steps get one engine thread while the loop is busy
        self.launched: deque[Launch] = deque()
        self.read_fd, self.write_fd = os.pipe()  # the runner thread writes 8 bytes when a launch is done
        for fd in (self.read_fd, self.write_fd):
            os.set_blocking(fd, False)
        asyncio.get_running_loop().add_reader(self.read_fd, self.on_launch_done)

    @staticmethod
    def can_run(streams: Streams) -> bool:
        """Whether ``streams`` can take launched batches: an in-process store and a launchable model."""
        return can_begin(streams)

    def run(self, batch: list[Waiting]) -> bool:
        started = time.perf_counter()
        try:
            threads = engine_threads(self.engine_threads, self.loop_load.busy())
            steady = begin(self.streams, [w.request for w in batch], self.write_fd, threads,
                           check_finite=self.check_finite)
        except Exception:  # the worker's step_each will report it, request by request
            return False
        if steady is None:
            return False
        self.launched.append(Launch(steady, batch, started))
        return True

    def on_launch_done(self) -> None:
        """The runner thread wrote to the pipe: write back and report every launched batch that is done."""
        with contextlib.suppress(BlockingIOError):  # a pipe holds 64 KB: one read empties it
            os.read(self.read_fd, 65536)
        while self.launched:
            steady, batch, started = self.launched[0]
            try:
                if not steady.done():
                    return
                outputs, _ = steady.finish()  # None: changed meanwhile, not applied
            except Exception as error:  # out of memory, or the store failed: the whole batch
                self.finished(Finish(batch, [as_error(error)] * len(batch), None, 0.0))
            else:
                self.finished(Finish(batch, outputs, started, time.perf_counter() - started))
            self.launched.popleft()

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.read_fd)
        os.close(self.read_fd)
        os.close(self.write_fd)
