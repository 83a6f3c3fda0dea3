"""The client's retry policy: resend one request, unchanged, until it is answered or the deadline passes.

Resending is safe because every request carries its ``sequence_step``: the server applies a step once and
answers a resent one with the output it stored (docs/streams.md#exactly-once-retries).

>>> [RetryPolicy(jitter=0).delay(k) for k in range(6)]
[0.05, 0.1, 0.2, 0.4, 0.8, 1.6]
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from rnnstream.client.outcomes import Answer, ClientTimeoutError, ConnectionLostError
from rnnstream.client.wire import Call
from rnnstream.types import FloatArray


@dataclass(frozen=True)
class RetryPolicy:
    """How long a request is retried: ``deadline`` seconds in all (its attempts and the waits between them), with
    waits from ``initial_backoff`` doubling up to ``max_backoff``, each shortened at random by up to ``jitter``
    of itself (so that many clients cut off together do not come back together). An attempt unanswered after
    ``attempt_timeout`` seconds is sent again (the server answers a request that waited its ``--timeout``, 30 s
    by default, with a 504)."""

    deadline: float = 60.0
    attempt_timeout: float = 40.0
    initial_backoff: float = 0.05
    max_backoff: float = 2.0
    jitter: float = 0.5

    def delay(self, attempt: int) -> float:
        """The wait after failed attempt number ``attempt`` (from 0)."""
        delay = min(self.max_backoff, self.initial_backoff * 2.0 ** min(attempt, 30))
        return delay * (1 - self.jitter * random.random()) if self.jitter else delay


@dataclass
class ClientStats:
    """What a client did: requests answered, attempts sent, retries (attempts after the first), WebSockets opened
    and reconnects (sockets opened after the first)."""

    requests: int = 0
    attempts: int = 0
    retries: int = 0
    sockets: int = 0
    reconnects: int = 0


Send = Callable[[Call], Awaitable[Answer]]


async def send_with_retries(send: Send, call: Call, policy: RetryPolicy, stats: ClientStats) -> list[FloatArray]:
    """``call``'s outputs: sent, and resent after a lost connection or a retryable refusal, until answered.
    A refusal that is not retryable raises its error (ServerError, StepOrderError); past the policy's deadline,
    ClientTimeoutError (``unknown`` when a connection was lost with the request sent)."""
    answer = await answered(lambda: send(call), f"stream {call.sequence_id!r}, step {call.step}", policy, stats)
    if answer.outputs is None:
        raise answer.exception(call.sequence_id, call.step)
    stats.requests += 1
    return answer.outputs


async def answered(attempt: Callable[[], Awaitable[Answer]], what: str, policy: RetryPolicy,
                   stats: ClientStats) -> Answer:
    """The first answer to ``attempt`` that is not a retryable refusal, trying again after lost connections,
    retryable refusals and attempts unanswered after ``policy.attempt_timeout``, until ``policy.deadline``."""
    deadline = time.monotonic() + policy.deadline
    unknown, k, cause = False, 0, "no answer"
    while True:
        stats.attempts += 1
        stats.retries += k > 0
        try:
            async with asyncio.timeout_at(_loop_time(min(deadline, time.monotonic() + policy.attempt_timeout))):
                answer = await attempt()
        except ConnectionLostError as error:
            unknown, cause = True, str(error)
        except TimeoutError:
            unknown, cause = True, "no answer"
        else:
            if not answer.retryable:
                return answer
            cause = str(answer.body.get("error", answer.status))
        delay = policy.delay(k)
        if time.monotonic() + delay >= deadline:
            raise ClientTimeoutError(
                f"{what}: no answer within {policy.deadline} s ({k + 1} attempts; last: {cause}); "
                + ("a connection was lost with it sent: a step may have been applied, and its stream resends it "
                   "before its next step (or at stream.retry())" if unknown else "nothing was applied"),
                unknown=unknown)
        k += 1
        await asyncio.sleep(delay)


def _loop_time(deadline: float) -> float:
    """A ``time.monotonic`` deadline on the running loop's clock."""
    return asyncio.get_running_loop().time() + (deadline - time.monotonic())
