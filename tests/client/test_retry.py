"""The retry policy's waits, and which answers are retried."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

import rnnstream
from rnnstream.client import RetryPolicy, ServerError
from rnnstream.client.outcomes import Answer


@given(st.integers(0, 10_000), st.floats(0, 1))
def test_waits_double_up_to_the_cap_and_jitter_only_shortens_them(attempt: int, jitter: float) -> None:
    policy = RetryPolicy(initial_backoff=0.05, max_backoff=2.0, jitter=jitter)
    plain = min(2.0, 0.05 * 2.0 ** min(attempt, 30))
    assert plain * (1 - jitter) <= policy.delay(attempt) <= plain


def test_which_answers_are_retried() -> None:
    assert Answer.refused(503, {"error": "full", "retryable": True}).retryable
    assert Answer.refused(504, {"error": "queue timeout"}).retryable
    assert Answer.refused(409, {"error": "conflict", "retryable": True}).retryable
    assert not Answer.refused(400, {"error": "bad"}).retryable
    assert not Answer.refused(409, {"error": "order", "expected_step": 2}).retryable


def test_refusals_become_typed_errors_with_the_servers_message() -> None:
    order = Answer.refused(409, {"error": "step 5 is out of order", "expected_step": 2}).exception("s", 5)
    assert isinstance(order, rnnstream.StepOrderError) and (order.expected, order.received) == (2, 5)
    refused = Answer.refused(400, {"error": "input 'x' is bad"}).exception("s", 1)
    assert isinstance(refused, ServerError) and refused.status == 400 and "input 'x' is bad" in str(refused)
