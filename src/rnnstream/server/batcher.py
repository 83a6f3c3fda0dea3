"""Micro-batching: concurrent step requests for one model become one engine call.

The batcher owns one model's loop: requests are queued as they arrive (:meth:`Batcher.enqueue_call`),
its :class:`~rnnstream.server.batch_policy.BatchPolicy` forms batches (arrival order, distinct streams,
wait for company only while the engine is busy, halves when an idle engine is handed a big batch), and
a runner steps each (rnnstream.server.runners: launched from the loop when it is a steady-state batch,
else on the worker thread; never on the event loop). Results are settled by callback, on the loop. A
request still queued after ``timeout`` gets a QueueTimeoutError; one in an engine call waits for it.
While launched batches may run, a stream with a step running waits for it to be written before its
next step is taken, so two batches in flight never share a stream.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Sequence

from rnnstream.server.batch_policy import SPLIT_WORK, BatchPolicy, Waiting
from rnnstream.server.metrics import Metrics, VersionStatistics
from rnnstream.server.refusals import QueueTimeoutError, ShuttingDownError
from rnnstream.server.runners import PIPELINE, Finish, LaunchRunner, Runner, WorkerRunner
from rnnstream.step_request import Result, StepRequest
from rnnstream.streams import Streams
from rnnstream.types import Outputs

logger = logging.getLogger(__name__)


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
        self.streams, self.name, self.check_finite = streams, name, check_finite
        self.metrics = metrics or Metrics()
        self.statistics = VersionStatistics()
        self.policy = BatchPolicy(max_batch=max_batch, max_delay=max_delay, timeout=timeout,
                                  row_work=streams.model.parameter_count, split_work=split_work)
        self.runners: list[Runner] = []  # made by start(), on the loop
        self.launches = LaunchRunner.can_run(streams)  # steady-state batches are launched from the loop
        self.running = 0  # batches taken by a runner, not yet reported
        self.wake = asyncio.Event()  # a request arrived, a batch finished, or close() was called
        self.slots = asyncio.Semaphore(PIPELINE)
        self.closing = False
        self.task: asyncio.Task[None] | None = None
        self.taps: dict[str, Callable[[StepRequest, Result], None]] = {}
        """Watched streams (rnnstream.server.watch): each settled step of one is also handed to its tap."""

    @property
    def max_batch(self) -> int:
        return self.policy.max_batch

    def start(self) -> None:
        """Start the loop and the runners (on the running event loop)."""
        if self.launches:
            self.runners.append(LaunchRunner(self.streams, self.finished, check_finite=self.check_finite))
        self.runners.append(WorkerRunner(self.streams, self.name, self.finished, check_finite=self.check_finite))
        self.task = asyncio.get_running_loop().create_task(self.loop(), name=f"batcher-{self.name}")

    def enqueue(self, request: StepRequest) -> asyncio.Future[Outputs]:
        """Queue one step now (so each stream keeps its order); the future resolves with its outputs."""
        future: asyncio.Future[Outputs] = asyncio.get_running_loop().create_future()
        self.enqueue_call(request, functools.partial(resolve, future))
        return future

    def enqueue_call(self, request: StepRequest, done: Callable[[Result], None]) -> None:
        """Queue one step now; ``done`` is called with its outputs or its error when it is settled, on the
        loop, straight from the batcher: no future, and no extra turn of the loop for its callback (~1 µs
        of an HTTP request's ~35 here). ``done`` should not raise; if it does, the error is logged."""
        if self.closing:
            raise ShuttingDownError("the server is shutting down; retry on another replica")
        self.policy.add(Waiting(request, done))
        self.wake.set()

    async def submit(self, request: StepRequest) -> Outputs:
        """Queue one step and wait for its outputs (or its error)."""
        return await self.enqueue(request)

    async def close(self) -> None:
        """Stop taking requests, finish every queued and running one, then stop the loop and the runners."""
        self.closing = True
        self.wake.set()
        if self.task is not None:
            await self.task
        for runner in self.runners:
            runner.close()

    async def loop(self) -> None:
        policy = self.policy
        while policy.queue or not self.closing:
            if not policy.queue:
                await self.wait()
                continue
            await self.gather_more()
            await self.slots.acquire()  # taken before the batch, so that it holds whatever came meanwhile
            self.expire()
            batch = policy.next_batch(running=bool(self.running))
            if not batch:  # all expired, or every queued stream has a step running: wait for one to end
                self.slots.release()
                if policy.queue:
                    await self.wait()
                continue
            if self.launches:
                policy.busy.update([w.request.stream_id for w in batch])
            self.dispatch(batch)
        while self.running:  # each report wakes the loop
            await self.wait()

    async def wait(self, timeout: float | None = None) -> None:
        """Until something changes (a request, a finished batch, close) or ``timeout`` seconds pass."""
        self.wake.clear()
        try:
            await asyncio.wait_for(self.wake.wait(), timeout)
        except TimeoutError:
            return

    async def gather_more(self) -> None:
        """Wait while the policy says requests should wait for company (rnnstream.server.batch_policy)."""
        while (left := self.policy.gather_wait(running=bool(self.running), now=time.perf_counter(),
                                               closing=self.closing)) > 0:
            await self.wait(left)

    def dispatch(self, batch: list[Waiting]) -> None:
        """Hand ``batch`` to the first runner that takes it (the worker takes any)."""
        for runner in self.runners:
            if runner.run(batch):
                self.running += 1
                return
        raise AssertionError("the worker runner takes every batch")

    def finished(self, finish: Finish) -> None:
        """A runner reports ``finish``: its slot and streams are free again (the engine may be idle now),
        steps not applied are queued again, first, and the others settled."""
        self.running -= 1
        self.slots.release()
        self.wake.set()
        if self.launches:
            self.policy.busy.difference_update([w.request.stream_id for w in finish.batch])
        pairs = list(zip(finish.batch, finish.results, strict=True))
        settled = [(w, result) for w, result in pairs if result is not None]
        if len(settled) < len(pairs):
            self.policy.put_back([w for w, result in pairs if result is None])
        self.complete([w for w, _ in settled], [result for _, result in settled], finish.started, finish.seconds)

    def complete(
        self, batch: list[Waiting], results: Sequence[Result], started: float | None = None, seconds: float = 0.0
    ) -> None:
        """Settle ``batch``'s requests; ``started``: when the engine call began (None: it failed)."""
        if started is not None:
            waits = [started - w.arrived for w in batch]
            self.metrics.queue_delay.observe_many(waits, model=self.name)
            self.metrics.step_latency.observe(seconds, model=self.name)
            self.statistics.computed(waits, seconds)
        self.statistics.settled(results)
        self.metrics.batch_size.observe(len(batch), model=self.name)
        for waiting, result in zip(batch, results, strict=True):
            settle(waiting, result)
        if self.taps:  # one check per batch: unwatched streams cost nothing more
            for waiting, result in zip(batch, results, strict=True):
                tap = self.taps.get(waiting.request.stream_id)
                if tap is not None:
                    tap(waiting.request, result)

    def expire(self) -> None:
        now = time.perf_counter()
        for waiting in self.policy.expired(now):
            settle(waiting, QueueTimeoutError(
                f"the request for stream {waiting.request.stream_id!r} waited {now - waiting.arrived:.1f} s "
                f"for the engine (timeout {self.policy.timeout:g} s) and was not applied; retry it"
            ))


def settle(waiting: Waiting, result: Result) -> None:
    """Hand ``result`` to the request's callback; a failing callback (a bug) is logged, the rest go on."""
    try:
        waiting.done(result)
    except Exception:  # a bug in the caller's callback: the rest of the batch is still answered
        logger.exception("the callback of a step of stream %r failed", waiting.request.stream_id)


def resolve(future: asyncio.Future[Outputs], result: Result) -> None:
    if future.done():  # the client went away
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)
