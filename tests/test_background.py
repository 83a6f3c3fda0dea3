"""Steady-state batches launched in the background: only plain next steps of held streams, written back
exactly as step_each would, and a stream changed meanwhile left alone and reported."""

from __future__ import annotations

import os
import select
from collections.abc import Iterator

import numpy as np
import pytest

import rnnstream
from rnnstream.background import SteadyBatch, begin, can_begin
from rnnstream.step_request import StepRequest
from rnnstream.stores.redis import RedisStore
from tests.stores.small import inputs, small_model

MODEL = small_model()
pytestmark = pytest.mark.skipif(not MODEL.can_launch, reason="the fused kernel is not built")


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read, write = os.pipe()
    yield read, write
    os.close(read)
    os.close(write)


def started(ids: str, xs: np.ndarray) -> rnnstream.Streams:
    streams = rnnstream.Streams(MODEL)
    streams.step_each([StepRequest(i, xs[k, 0], start=True) for k, i in enumerate(ids)])
    return streams


def finish(batch: SteadyBatch, read: int) -> tuple[list[object], list[int]]:
    while not batch.done():
        select.select([read], [], [], 30)
        os.read(read, 4096)
    return batch.finish()  # type: ignore[return-value]


def test_a_launched_batch_equals_step_each(pipe: tuple[int, int]) -> None:
    xs = inputs(5, 3, n=4)
    launched, stepped = started("abcd", xs), started("abcd", xs)
    for t in (1, 2):
        requests = [StepRequest(i, xs[k, t]) for k, i in enumerate("abcd")]
        batch = begin(launched, requests, pipe[1])
        assert batch is not None
        outputs, conflicts = finish(batch, pipe[0])
        expected = stepped.step_each(requests)
        assert conflicts == []
        for ours, theirs in zip(outputs, expected, strict=True):
            for a, b in zip(ours, theirs, strict=True):  # type: ignore[call-overload]
                np.testing.assert_array_equal(a, b)
    ids = list("abcd")
    mine, theirs = launched.store.load(ids), stepped.store.load(ids)
    np.testing.assert_array_equal(mine.rows, theirs.rows)
    assert mine.steps.tolist() == theirs.steps.tolist() == [3, 3, 3, 3]


@pytest.mark.parametrize(
    "request_of",
    [
        lambda x: StepRequest("a", x, start=True),
        lambda x: StepRequest("a", x, end=True),
        lambda x: StepRequest("a", x, step_number=2),
        lambda x: StepRequest("new", x),
        lambda x: StepRequest("a", np.zeros(5, np.float32)),  # a wrong shape: step_each reports it
        lambda x: StepRequest("b", x),  # b twice in one batch
    ],
    ids=["start", "end", "step-number", "unknown-stream", "bad-input", "repeated-stream"],
)
def test_anything_but_plain_next_steps_of_held_streams_is_left_to_step_each(request_of, pipe) -> None:  # type: ignore[no-untyped-def]
    xs = inputs(6, 2, n=2)
    streams = started("ab", xs)
    before = streams.store.load(["a", "b"])
    assert begin(streams, [StepRequest("b", xs[1, 1]), request_of(xs[0, 1])], pipe[1]) is None
    after = streams.store.load(["a", "b"])
    np.testing.assert_array_equal(after.rows, before.rows)
    assert after.versions.tolist() == before.versions.tolist()
    os.set_blocking(pipe[0], False)
    with pytest.raises(BlockingIOError):
        os.read(pipe[0], 8)  # nothing was launched


def test_a_stream_changed_meanwhile_is_reported_and_not_overwritten(pipe: tuple[int, int]) -> None:
    xs = inputs(7, 2, n=2)
    streams = started("ab", xs)
    batch = begin(streams, [StepRequest("a", xs[0, 1]), StepRequest("b", xs[1, 1])], pipe[1])
    assert batch is not None
    streams.reset("a")  # another caller writes a while the step runs
    outputs, conflicts = finish(batch, pipe[0])
    assert conflicts == [0] and outputs[0] is None and outputs[1] is not None
    records = streams.store.load(["a", "b"])
    assert records.steps.tolist() == [0, 2]
    assert not records.rows[0].any()  # a keeps the reset's state


def test_only_in_process_stores_and_launchable_models_begin() -> None:
    assert can_begin(rnnstream.Streams(MODEL))
    assert not RedisStore.in_process  # network round trips stay on the worker thread, off the event loop
    assert not can_begin(rnnstream.Streams(rnnstream.StreamModel(MODEL.graph, backend="numpy")))
