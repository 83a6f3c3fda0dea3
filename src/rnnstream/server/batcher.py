"""Micro-batching: concurrent step requests for one model become one engine call.

The loop takes requests in arrival order, never puts two requests of one stream in a batch (the later
one waits for the next batch, so each stream's steps keep their order), and runs ``Streams.step_each``
on a worker thread, never on the event loop. When no batch is running, the queued requests go at
once; while one is running, they wait for more to join them until ``max_batch`` are queued,
``max_delay`` has passed since the oldest arrived, or the running batches have finished. Waiting
while the engine is idle would only add latency: with 1,000 seed-model streams each sending a step
per second (a Zen 4), going at once took the median HTTP latency from 2.3 to 1.1 ms and, at 10
steps/s over WebSocket, from 6.1 to 3.5 ms. Under load the engine is busy and batches fill. Many
steps that find the engine idle go as two halves (``_next_size``): with one batch, the loop idled while
the engine stepped it and the engine idled while the loop answered it (1,000 WebSocket streams ran in
lock-step, batches of 600–900); with two, each works on one half while the other works on the other.
A request still queued after ``timeout`` gets a TimeoutError; one in an engine call waits for it to finish.

Batches are pipelined: while the worker steps one batch, the next one is formed and queued behind it
(at most ``PIPELINE`` batches are handed to the worker at once). The worker is one thread taking batches
in order, so a stream's later step, even in the next batch, is read only after its earlier one is
written. Without this, the worker would sit idle from the end of each batch until the event loop,
busy with sockets, got round to sending it the next: measured with 1,000 WebSocket streams of the
seed model, the engine call took 2.9 ms of each 4.9 ms between batches.

Steady-state batches skip the worker (rnnstream.background): with an in-process store and a model the
fused kernel steps whole, a batch of plain next steps of held streams is read, launched and written
back here, on the loop, while its step runs on the kernel's runner thread, which announces the end on
a pipe the loop watches. A Python worker that released the GIL for the kernel had to win it back from
the loop, and lost until the loop ran out of work (1.3 ms of Python took 5.8 ms per batch). Then a
stream with a step running (``busy``) waits for it to be written before its next step is taken, so two
batches in flight never share a stream; a step whose stream was changed meanwhile (a reset, another
writer) is queued again, first.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from rnnstream.background import SteadyBatch, begin, can_begin
from rnnstream.errors import RnnstreamError
from rnnstream.model import Outputs
from rnnstream.server.errors import QueueTimeoutError, ShuttingDownError
from rnnstream.server.loop_load import LoopLoad, engine_threads
from rnnstream.server.metrics import Metrics
from rnnstream.stepping import Result, StepRequest
from rnnstream.streams import Streams

logger = logging.getLogger(__name__)

PIPELINE = 2
"""Batches handed to the worker thread at once: the one it steps and the next, ready when it is done."""

SPLIT_WORK = 10_000_000
"""Multiply-adds (streams × the model's parameters) each half of a batch needs before an idle engine's
batch goes as two: below it, the second batch's own overhead outweighs the overlap."""


class _Waiting:
    """A queued step: its request, the callback that settles it (once, on the loop) and when it came."""

    __slots__ = ("arrived", "done", "request")

    def __init__(self, request: StepRequest, done: Callable[[Result], None]) -> None:
        self.request, self.done, self.arrived = request, done, time.perf_counter()


def take_batch(queue: deque[_Waiting], max_batch: int, busy: AbstractSet[str] = frozenset()) -> list[_Waiting]:
    """Remove and return the next batch: arrival order, distinct streams, at most ``max_batch``.

    A request whose stream is already in the batch, or in ``busy`` (a batch still running), stays
    queued, ahead of anything of that stream that arrived later.
    """
    batch: list[_Waiting] = []
    kept: deque[_Waiting] = deque()
    streams: set[str] = set()
    while queue:
        waiting = queue.popleft()
        stream_id = waiting.request.stream_id
        if len(batch) < max_batch and stream_id not in streams and stream_id not in busy:
            batch.append(waiting)
        else:
            kept.append(waiting)
        streams.add(stream_id)
    queue.extend(kept)
    return batch


class Batcher:
    """The batching loop of one served model."""

    def __init__(
        self,
        streams: Streams,
        *,
        name: str,
        max_batch: int = 256,
        max_delay: float = 0.002,
        timeout: float = 30.0,
        metrics: Metrics | None = None,
        split_work: int = SPLIT_WORK,
        check_finite: bool = True,
    ) -> None:
        self.streams = streams
        self.check_finite = check_finite
        self.name = name
        self.max_batch = max(1, max_batch)
        self.max_delay = max(0.0, max_delay)
        self.timeout = timeout
        self.metrics = metrics or Metrics()
        self.split_work = split_work
        self._row_work = streams.model.parameter_count  # multiply-adds per stream and step (a sum: kept)
        self._queue: deque[_Waiting] = deque()
        self._wake = asyncio.Event()  # a request arrived, a batch finished, or close() was called
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"rnnstream-{name}")
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._background = can_begin(streams)  # steady-state batches are launched from the loop
        self._slots = asyncio.Semaphore(PIPELINE)
        self._busy: set[str] = set()  # the streams of running batches: their next steps wait
        self._running: set[asyncio.Future[Any]] = set()  # handed to the worker or launched
        self._launched: deque[tuple[SteadyBatch, list[_Waiting], float, asyncio.Future[None]]] = deque()
        self._pipe: tuple[int, int] | None = None  # the runner thread writes to [1] when a launch is done
        self._second_half = False  # the last batch was the first half of a split one
        self._engine_threads = int(getattr(streams.model.backend, "threads", 1))
        self._loop_load = LoopLoad()  # launched steps get one engine thread while the loop is busy

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._loop(), name=f"batcher-{self.name}")
        if self._background:
            self._pipe = os.pipe()
            for fd in self._pipe:
                os.set_blocking(fd, False)
            loop.add_reader(self._pipe[0], self._on_launch_done)

    def enqueue(self, request: StepRequest) -> asyncio.Future[Outputs]:
        """Queue one step now (so each stream keeps its order); the future resolves with its outputs."""
        future: asyncio.Future[Outputs] = asyncio.get_running_loop().create_future()
        self.enqueue_call(request, functools.partial(_resolve, future))
        return future

    def enqueue_call(self, request: StepRequest, done: Callable[[Result], None]) -> None:
        """Queue one step now; ``done`` is called with its outputs or its error when it is settled, on the
        loop, straight from the batcher: no future, and no extra turn of the loop for its callback (~1 µs
        of an HTTP request's ~35 here). ``done`` should not raise; if it does, the error is logged."""
        if self._closing:
            raise ShuttingDownError("the server is shutting down; retry on another replica")
        self._queue.append(_Waiting(request, done))
        self._wake.set()

    async def submit(self, request: StepRequest) -> Outputs:
        """Queue one step and wait for its outputs (or its error)."""
        return await self.enqueue(request)

    async def close(self) -> None:
        """Stop taking requests, finish every queued and running one, then stop the loop."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
        self._executor.shutdown(wait=True)
        if self._pipe is not None:
            asyncio.get_running_loop().remove_reader(self._pipe[0])
            for fd in self._pipe:
                os.close(fd)
            self._pipe = None

    async def _loop(self) -> None:
        while True:
            if not self._queue:
                if self._closing:
                    break
                self._wake.clear()
                await self._wake.wait()
                continue
            if not self._second_half:  # the rest of a split batch takes no wait
                await self._gather_more()
            await self._slots.acquire()  # taken before the batch, so that it holds whatever came meanwhile
            self._expire()
            size, self._second_half = self._next_size()
            batch = take_batch(self._queue, size, self._busy)  # empty unless launching
            if not batch:  # all expired, or every queued stream has a step running: wait for one to end
                self._slots.release()
                if self._queue:
                    self._wake.clear()
                    await self._wake.wait()
                continue
            if self._background:
                self._busy.update([w.request.stream_id for w in batch])
            self._dispatch(batch)
        if self._running:  # each batch is settled before asyncio.wait sees it done (callbacks run in order)
            await asyncio.wait(self._running)

    def _next_size(self) -> tuple[int, bool]:
        """The next batch's size, and whether it is the first half of a split one: ``max_batch``, or half
        of what waits when the engine is idle and each half is worth ``split_work``. The second half
        follows at once, queued behind the first, so the loop writes the first back and answers its
        streams while the engine steps the second, instead of one idling while the other works."""
        waiting = min(len(self._queue), self.max_batch)
        if self._running or waiting < 2 or waiting * self._row_work < 2 * self.split_work:
            return self.max_batch, False
        return (waiting + 1) // 2, True

    def _dispatch(self, batch: list[_Waiting]) -> None:
        """Launch ``batch`` from here, or hand it to the worker thread; its requests are settled when done."""
        loop = asyncio.get_running_loop()
        if self._pipe is not None and self._launch(batch, loop):
            return
        job = loop.run_in_executor(self._executor, self._step, [w.request for w in batch])
        self._running.add(job)

        def settle(job: asyncio.Future[tuple[list[Result], float, float]]) -> None:
            self._release(batch)
            self._running.discard(job)
            error = job.exception()
            if error is None:
                results, started, seconds = job.result()
                self._complete(batch, results, started, seconds)
            else:  # the store or the engine failed for the whole batch
                failure = error if isinstance(error, Exception) else RuntimeError(repr(error))
                self._complete(batch, [_as_error(failure)] * len(batch))

        job.add_done_callback(settle)

    def _launch(self, batch: list[_Waiting], loop: asyncio.AbstractEventLoop) -> bool:
        """Begin ``batch`` as a steady-state batch (rnnstream.background); False if it is not one."""
        assert self._pipe is not None
        started = time.perf_counter()
        try:
            threads = engine_threads(self._engine_threads, self._loop_load.busy())
            steady = begin(self.streams, [w.request for w in batch], self._pipe[1], threads,
                           check_finite=self.check_finite)
        except Exception:  # the worker's step_each will report it, request by request
            return False
        if steady is None:
            return False
        finished: asyncio.Future[None] = loop.create_future()
        self._running.add(finished)
        self._launched.append((steady, batch, started, finished))
        return True

    def _on_launch_done(self) -> None:
        """The runner thread wrote to the pipe: write back and settle every launched batch that is done."""
        assert self._pipe is not None
        with contextlib.suppress(BlockingIOError):  # a pipe holds 64 KB: one read empties it
            os.read(self._pipe[0], 65536)
        while self._launched:
            steady, batch, started, finished = self._launched[0]
            outputs: list[Outputs | None]
            try:
                if not steady.done():
                    return
                outputs, conflicts = steady.finish()
                self._release(batch)
            except Exception as error:  # out of memory, or the store failed: the whole batch
                self._release(batch)
                self._complete(batch, [_as_error(error)] * len(batch))
            else:
                retry = [batch[k] for k in conflicts]  # changed meanwhile, not applied: queued again, first
                self._queue.extendleft(reversed(retry))
                if retry:
                    self._wake.set()
                done = [(w, y) for w, y in zip(batch, outputs, strict=True) if y is not None]
                self._complete([w for w, _ in done], [y for _, y in done], started, time.perf_counter() - started)
            self._launched.popleft()
            self._running.discard(finished)
            finished.set_result(None)

    def _release(self, batch: list[_Waiting]) -> None:
        """``batch`` has finished (written or failed): its slot and its streams are free again, and the
        requests waiting for company may go (the engine may be idle now)."""
        self._slots.release()
        self._wake.set()
        if self._background:
            self._busy.difference_update([w.request.stream_id for w in batch])

    def _complete(
        self, batch: list[_Waiting], results: Sequence[Result], started: float | None = None, seconds: float = 0.0
    ) -> None:
        """Settle ``batch``'s requests; ``started``: when the engine call began (None: it failed)."""
        if started is not None:
            self.metrics.queue_delay.observe_many([started - w.arrived for w in batch], model=self.name)
            self.metrics.step_latency.observe(seconds, model=self.name)
        self.metrics.batch_size.observe(len(batch), model=self.name)
        for waiting, result in zip(batch, results, strict=True):
            _settle(waiting, result)

    def _step(self, requests: list[StepRequest]) -> tuple[list[Result], float, float]:
        """On the worker thread: one engine call, when it started and how long it took."""
        started = time.perf_counter()
        results = self.streams.step_each(requests, check_finite=self.check_finite)
        return results, started, time.perf_counter() - started

    async def _gather_more(self) -> None:
        """Wait, while a batch is running, until ``max_batch`` requests wait, ``max_delay`` has passed
        since the oldest arrived, or no batch is running any more; with none running, return at once."""
        deadline = self._queue[0].arrived + self.max_delay
        while len(self._queue) < self.max_batch and not self._closing:
            if not self._running:  # the engine is idle: waiting for company would only add latency
                return
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), remaining)
            except TimeoutError:
                return

    def _expire(self) -> None:
        now = time.perf_counter()
        while self._queue and now - self._queue[0].arrived > self.timeout:
            waiting = self._queue.popleft()
            _settle(waiting, QueueTimeoutError(
                f"the request for stream {waiting.request.stream_id!r} waited {now - waiting.arrived:.1f} s "
                f"for the engine (timeout {self.timeout:g} s) and was not applied; retry it"
            ))


def _as_error(error: Exception) -> RnnstreamError:
    return error if isinstance(error, RnnstreamError) else RnnstreamError(f"internal error: {error!r}")


def _settle(waiting: _Waiting, result: Result) -> None:
    try:
        waiting.done(result)
    except Exception:  # a bug in the caller's callback: the rest of the batch is still answered
        logger.exception("the callback of a step of stream %r failed", waiting.request.stream_id)


def _resolve(future: asyncio.Future[Outputs], result: Result) -> None:
    if future.done():  # the client went away
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)
