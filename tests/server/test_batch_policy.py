"""The batcher's policy, with no loop and no threads: which steps form the next batch, and when."""

from __future__ import annotations

import numpy as np
import pytest

from rnnstream.server.batch_policy import BatchPolicy, Waiting
from rnnstream.step_request import StepRequest


def policy(max_batch: int = 4, *, row_work: int = 1, split_work: int = 10**9) -> BatchPolicy:
    return BatchPolicy(max_batch=max_batch, max_delay=0.002, timeout=1.0, row_work=row_work, split_work=split_work)


def queued(rules: BatchPolicy, streams: str, arrived: float = 0.0) -> None:
    for stream_id in streams:
        rules.add(Waiting(StepRequest(stream_id, np.zeros(3)), lambda result: None, arrived=arrived))


def ids(batch: list[Waiting]) -> str:
    return "".join(w.request.stream_id for w in batch)


def test_a_busy_stream_waits_and_keeps_its_place() -> None:
    rules = policy()
    queued(rules, "abac")
    rules.busy.add("b")
    assert ids(rules.next_batch(running=True)) == "ac"
    assert ids(rules.queue) == "ba"


def test_requests_wait_for_company_only_while_a_batch_runs() -> None:
    rules = policy()
    queued(rules, "ab", arrived=10.0)
    assert rules.gather_wait(running=False, now=10.0) == 0.0  # an idle engine: go at once
    assert rules.gather_wait(running=True, now=10.0005) == pytest.approx(0.0015)
    assert rules.gather_wait(running=True, now=10.003) == 0.0  # max_delay has passed
    assert rules.gather_wait(running=True, now=10.0, closing=True) == 0.0
    queued(rules, "cd", arrived=10.0)
    assert rules.gather_wait(running=True, now=10.0) == 0.0  # max_batch are queued


def test_an_idle_engines_batch_goes_as_two_halves_when_each_is_worth_it() -> None:
    rules = policy(8, row_work=100, split_work=200)
    queued(rules, "abcdefg")
    assert ids(rules.next_batch(running=False)) == "abcd" and rules.second_half
    assert rules.gather_wait(running=True, now=0.0) == 0.0  # the second half takes no wait
    assert ids(rules.next_batch(running=True)) == "efg" and not rules.second_half
    queued(rules, "ab")
    assert rules.next_size(running=False) == (8, False)  # 2 × 100 is not worth two batches of 200


def test_expired_requests_leave_the_queue_in_order_and_retries_go_first() -> None:
    rules = policy()
    queued(rules, "ab", arrived=0.0)
    queued(rules, "c", arrived=5.0)
    assert ids(rules.expired(now=2.0)) == "ab" and ids(rules.queue) == "c"
    rules.put_back([Waiting(StepRequest(s, np.zeros(3)), lambda result: None) for s in "xy"])
    assert ids(rules.queue) == "xyc"
