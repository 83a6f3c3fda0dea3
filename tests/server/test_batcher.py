"""The micro-batcher: batches across streams, never two steps of one stream together, order kept,
timeouts instead of hangs, and a clean drain on close."""

from __future__ import annotations

import asyncio
import time
from collections import deque

import numpy as np
import pytest

import rnnstream
from rnnstream.errors import InputError
from rnnstream.server.batch_policy import Waiting, take_batch
from rnnstream.server.batcher import Batcher
from rnnstream.server.refusals import QueueTimeoutError, ShuttingDownError
from rnnstream.step_request import Result, StepRequest
from rnnstream.stores.memory import MemoryStore
from tests.stores.small import inputs, small_model

MODEL = small_model()


def waiting(stream_id: str) -> Waiting:
    return Waiting(StepRequest(stream_id, np.zeros(3, np.float32)), lambda result: None)


def test_take_batch_keeps_order_and_distinct_streams() -> None:
    queue = deque(waiting(s) for s in ["a", "b", "a", "c", "a", "d"])
    first = take_batch(queue, max_batch=3)
    assert [w.request.stream_id for w in first] == ["a", "b", "c"]
    assert [w.request.stream_id for w in queue] == ["a", "a", "d"]  # both a's wait, in order
    second = take_batch(queue, max_batch=3)
    assert [w.request.stream_id for w in second] == ["a", "d"]
    assert [w.request.stream_id for w in take_batch(queue, 3)] == ["a"] and not queue


def test_enqueue_call_answers_by_callback_and_a_failing_callback_spoils_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    xs = inputs(1, 2, n=2)
    got: dict[str, Result] = {}

    def broken(result: Result) -> None:
        raise RuntimeError("a bug in the caller")

    async def drive() -> list[np.ndarray]:
        batcher = Batcher(rnnstream.Streams(MODEL), name="small", max_batch=64, max_delay=0.01)
        batcher.start()
        batcher.enqueue_call(StepRequest("a", xs[0, 0]), broken)
        batcher.enqueue_call(StepRequest("b", xs[1, 0]), lambda result: got.setdefault("b", result))
        batcher.enqueue_call(StepRequest("c", np.zeros(7, np.float32)), lambda result: got.setdefault("c", result))
        second_of_a = await batcher.submit(StepRequest("a", xs[0, 1]))
        await batcher.close()
        return second_of_a  # type: ignore[return-value]

    second_of_a = asyncio.run(drive())
    ys, _ = MODEL.run(xs, MODEL.initial_state(2))
    np.testing.assert_allclose(got["b"][0], ys[0][1, 0], rtol=1e-6, atol=1e-6)  # type: ignore[index]
    assert isinstance(got["c"], InputError) and "shape" in str(got["c"])
    np.testing.assert_allclose(second_of_a[0], ys[0][0, 1], rtol=1e-6, atol=1e-6)  # a's first step stands
    assert "the callback of a step of stream 'a' failed" in caplog.text


def test_concurrent_requests_share_engine_calls_and_keep_per_stream_order() -> None:
    xs = inputs(0, 4, n=6)

    async def drive() -> tuple[list[list[object]], Batcher]:
        streams = rnnstream.Streams(MODEL)
        batcher = Batcher(streams, name="small", max_batch=64, max_delay=0.01)
        batcher.start()
        calls = [[asyncio.ensure_future(batcher.submit(StepRequest(f"s{k}", xs[k, t]))) for t in range(4)]
                 for k in range(6)]
        results = [await asyncio.gather(*per_stream) for per_stream in calls]
        await batcher.close()
        return results, batcher

    results, batcher = asyncio.run(drive())
    ys, _ = MODEL.run(xs, MODEL.initial_state(6))
    for k in range(6):
        for t in range(4):
            np.testing.assert_allclose(results[k][t][0], ys[0][k, t], rtol=1e-6, atol=1e-6)
    rendered = batcher.metrics.render()
    assert 'rnnstream_batch_size_count{model="small"} 4' in rendered  # 24 steps, 4 engine calls


def test_a_request_that_waits_too_long_times_out_unapplied() -> None:
    """While a batch runs, the next waits up to max_delay for company: longer than the timeout here."""
    streams = SlowStreams(MODEL, seconds=0.3)

    async def drive() -> None:
        batcher = Batcher(streams, name="small", max_batch=8, max_delay=0.2, timeout=0.05)
        batcher.start()
        first = asyncio.ensure_future(batcher.submit(StepRequest("first", np.zeros(3, np.float32))))
        await asyncio.sleep(0.02)  # "first" is in the engine
        with pytest.raises(QueueTimeoutError, match="was not applied"):
            await batcher.submit(StepRequest("late", np.zeros(3, np.float32)))
        await first
        await batcher.close()
        with pytest.raises(ShuttingDownError):
            await batcher.submit(StepRequest("after", np.zeros(3, np.float32)))

    asyncio.run(drive())
    assert "first" in streams and "late" not in streams


def test_an_idle_engine_takes_a_request_at_once_and_a_busy_one_gathers_until_it_is_free() -> None:
    """max_delay (10 s here) bounds the wait for company only while a batch runs; a request that finds
    the engine idle goes at once, and those queued behind a running batch go together when it ends."""
    streams = SlowStreams(rnnstream.StreamModel(MODEL.graph, name="small", backend="numpy"), seconds=0.2)

    async def drive() -> float:
        batcher = Batcher(streams, name="small", max_batch=8, max_delay=10.0)
        batcher.start()
        began = time.perf_counter()
        first = asyncio.ensure_future(batcher.submit(StepRequest("a", np.zeros(3, np.float32))))
        await asyncio.sleep(0.05)  # "a" is in the engine
        later = [asyncio.ensure_future(batcher.submit(StepRequest(s, np.zeros(3, np.float32)))) for s in "bc"]
        await asyncio.gather(first, *later)
        elapsed = time.perf_counter() - began
        await batcher.close()
        return elapsed

    elapsed = asyncio.run(drive())
    assert [ids for ids, _, _ in streams.calls] == [["a"], ["b", "c"]]
    assert elapsed < 2.0  # two engine calls of 0.2 s, no wait of max_delay


def test_close_finishes_queued_requests() -> None:
    async def drive() -> list[object]:
        batcher = Batcher(rnnstream.Streams(MODEL), name="small", max_batch=2, max_delay=0.05)
        batcher.start()
        pending = [asyncio.ensure_future(batcher.submit(StepRequest(f"q{k}", np.zeros(3, np.float32))))
                   for k in range(5)]
        await asyncio.sleep(0)
        await batcher.close()
        return await asyncio.gather(*pending)

    assert len(asyncio.run(drive())) == 5


class SlowStreams(rnnstream.Streams):
    """Real streams whose engine calls take a while, and which note when each call starts and ends."""

    def __init__(self, model: rnnstream.StreamModel, seconds: float) -> None:
        super().__init__(model)
        self.seconds = seconds
        self.calls: list[tuple[list[str], float, float]] = []

    def step_each(self, requests, *, check_finite=False):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        time.sleep(self.seconds)
        results = super().step_each(requests, check_finite=check_finite)
        self.calls.append(([r.stream_id for r in requests], started, time.perf_counter()))
        return results


def test_the_next_batch_waits_behind_the_running_one_and_steps_in_order() -> None:
    """On the worker thread (a model the kernel cannot launch), batches queue behind each other."""
    xs = inputs(1, 3, n=2)
    streams = SlowStreams(rnnstream.StreamModel(MODEL.graph, name="small", backend="numpy"), seconds=0.2)

    batcher = Batcher(streams, name="small", max_batch=8, max_delay=0.0)

    async def drive() -> tuple[list[object], int]:
        batcher.start()
        first = asyncio.ensure_future(batcher.submit(StepRequest("a", xs[0, 0])))
        await asyncio.sleep(0.05)  # batch 1 (a) is in the engine
        later = [asyncio.ensure_future(batcher.submit(StepRequest(s, xs[k, t])))
                 for t in (1, 2) for k, s in enumerate("ab") if (s, t) != ("a", 0)]
        await asyncio.sleep(0.05)
        queued = len(batcher.policy.queue)  # batch 2 (a, b) was handed over; a's third step waits for a slot
        results = [await first, *await asyncio.gather(*later)]
        await batcher.close()
        return results, queued

    results, queued = asyncio.run(drive())
    assert queued == 2  # a@2 and b@2: the two slots hold batch 1 (running) and batch 2 (next)
    assert [ids for ids, _, _ in streams.calls] == [["a"], ["a", "b"], ["a", "b"]]
    ends = [end for _, _, end in streams.calls]
    starts = [start for _, start, _ in streams.calls]
    assert all(start >= end for start, end in zip(starts[1:], ends, strict=False))  # one call at a time
    ys, _ = MODEL.run(xs, MODEL.initial_state(2))
    a_steps = [results[0], results[1], results[3]]
    for t, result in enumerate(a_steps):
        np.testing.assert_allclose(result[0], ys[0][0, t], rtol=1e-6, atol=1e-6)
    # The queue delay runs until a request's engine call starts, waiting behind a running batch included:
    # ~0 for a@0, ~0.15 s for a@1 and b@1 (behind batch 1), ~0.35 s for a@2 and b@2 (behind batch 2).
    (total,) = [float(line.split()[-1]) for line in batcher.metrics.render().splitlines()
                if line.startswith('rnnstream_queue_delay_seconds_sum{model="small"}')]
    assert 0.8 < total < 2.0


class CountingStreams(rnnstream.Streams):
    """Real streams that note the requests of each batch the worker thread steps."""

    def __init__(self, model: rnnstream.StreamModel) -> None:
        super().__init__(model)
        self.worker_batches: list[list[str]] = []

    def step_each(self, requests, *, check_finite=False):  # type: ignore[no-untyped-def]
        self.worker_batches.append([f"{r.stream_id}{'+' if r.start else ''}" for r in requests])
        return super().step_each(requests, check_finite=check_finite)


@pytest.mark.skipif(not MODEL.can_launch, reason="the fused kernel is not built")
def test_steady_batches_are_launched_and_a_running_streams_next_step_waits_for_it() -> None:
    xs = inputs(2, 4, n=3)
    streams = CountingStreams(MODEL)

    async def drive() -> tuple[list[list[object]], Batcher]:
        batcher = Batcher(streams, name="small", max_batch=64, max_delay=0.005)
        batcher.start()
        ids = ["a", "b", "c"]
        # Each stream's steps are queued at once: step t + 1 of a stream may only be read after step t
        # was written, so each batch takes one step of every stream.
        calls = [[asyncio.ensure_future(batcher.submit(StepRequest(i, xs[k, t], start=t == 0))) for t in range(4)]
                 for k, i in enumerate(ids)]
        results = [await asyncio.gather(*per_stream) for per_stream in calls]
        await batcher.close()
        return results, batcher

    results, batcher = asyncio.run(drive())
    assert streams.worker_batches == [["a+", "b+", "c+"]]  # the starts; the 3 steady batches were launched
    ys, _ = MODEL.run(xs, MODEL.initial_state(3))
    for k in range(3):
        for t in range(4):
            for ours, theirs in zip(results[k][t], ys, strict=True):
                np.testing.assert_allclose(ours, theirs[k, t], rtol=1e-6, atol=1e-6)
    assert 'rnnstream_batch_size_count{model="small"} 4' in batcher.metrics.render()
    assert streams.store.load(["a"]).steps.tolist() == [4]


class RacingStore(MemoryStore):
    """A memory store in which another writer resets stream ``a`` just before the first batch write
    that includes it, as a second process sharing the streams could."""

    raced = False

    def commit(self, ids, versions, rows, steps, outputs, ended=None):  # type: ignore[no-untyped-def]
        if "a" in ids and steps.min() > 1 and not self.raced:
            self.raced = True
            self.put("a", np.zeros(self.state_size, np.float32), 0, np.zeros(self.output_size, np.float32))
        return super().commit(ids, versions, rows, steps, outputs, ended)


@pytest.mark.skipif(not MODEL.can_launch, reason="the fused kernel is not built")
def test_a_launched_step_whose_stream_changed_meanwhile_is_stepped_again() -> None:
    xs = inputs(3, 2, n=2)
    streams = rnnstream.Streams(MODEL)
    streams.store = RacingStore(MODEL.state_size, streams.store.output_size)

    async def drive() -> list[object]:
        batcher = Batcher(streams, name="small", max_batch=64, max_delay=0.005)
        batcher.start()
        await asyncio.gather(*(batcher.submit(StepRequest(i, xs[k, 0], start=True)) for k, i in enumerate("ab")))
        second = await asyncio.gather(*(batcher.submit(StepRequest(i, xs[k, 1])) for k, i in enumerate("ab")))
        await batcher.close()
        return second

    second = asyncio.run(drive())
    assert streams.store.raced
    a_after_reset, _ = MODEL.step(xs[:1, 1], MODEL.initial_state(1))  # a's step, applied again on the reset state
    b_step, _ = MODEL.run(xs[1:, :2], MODEL.initial_state(1))
    for ours, theirs in zip(second[0], a_after_reset, strict=True):  # type: ignore[call-overload]
        np.testing.assert_allclose(ours, theirs[0], rtol=1e-6, atol=1e-6)
    for ours, theirs in zip(second[1], b_step, strict=True):  # type: ignore[call-overload]
        np.testing.assert_allclose(ours, theirs[0, 1], rtol=1e-6, atol=1e-6)
    assert streams.store.load(["a", "b"]).steps.tolist() == [1, 2]


@pytest.mark.parametrize(("split_work", "expected"), [(1, [5, 5]), (10**12, [10])])
def test_an_idle_engines_batch_goes_as_two_halves_when_each_is_worth_it(split_work: int, expected: list[int]) -> None:
    """Ten steps find the engine idle: with enough work per half (split_work multiply-adds) they go as
    two batches, the second at once behind the first, not after max_delay; otherwise as one."""
    streams = SlowStreams(rnnstream.StreamModel(MODEL.graph, name="small", backend="numpy"), seconds=0.05)

    async def drive() -> None:
        batcher = Batcher(streams, name="small", max_batch=64, max_delay=10.0, split_work=split_work)
        batcher.start()
        steps = [batcher.enqueue(StepRequest(f"s{k}", np.zeros(3, np.float32))) for k in range(10)]
        await asyncio.wait_for(asyncio.gather(*steps), 5.0)
        await batcher.close()

    asyncio.run(drive())
    assert [len(ids) for ids, _, _ in streams.calls] == expected
    assert [i for ids, _, _ in streams.calls for i in ids] == [f"s{k}" for k in range(10)]
