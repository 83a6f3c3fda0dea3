"""What a server's answer means to the client: outputs, a refusal worth retrying, or an error to raise.

A refused request changed nothing on the server, so a retryable one (503, 504, ``"retryable": true``) is sent
again as it was; a connection lost before the answer leaves the request's fate unknown, and resending it with
the same ``sequence_step`` is what makes it exactly-once (docs/streams.md#exactly-once-retries).

>>> answer = Answer.refused(503, {"error": "too many streams", "retryable": True})
>>> answer.retryable, type(answer.exception("s", 4)).__name__
(True, 'ServerError')
>>> Answer.refused(409, {"error": "out of order", "expected_step": 3}).exception("s", 5).expected
3
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rnnstream.errors import RnnstreamError, StepOrderError
from rnnstream.types import FloatArray

RETRYABLE_STATUS = frozenset({502, 503, 504})
"""Statuses retried even when the body does not say so (a proxy's, or a server on its way down)."""


class ServerError(RnnstreamError):
    """The server refused a request; ``status`` is its HTTP status (the WebSocket's ``code``), ``body`` its
    JSON error (``error``, and ``limit`` or ``retryable`` where they apply). Nothing was applied."""

    def __init__(self, message: str, *, status: int, body: Mapping[str, Any]) -> None:
        super().__init__(message)
        self.status, self.body = status, dict(body)


class ClientTimeoutError(RnnstreamError, TimeoutError):
    """A request got no answer within the client's deadline (``RetryPolicy.deadline``). ``unknown`` is True when a
    connection was lost with the request sent: it may have been applied. The stream keeps it and resends it
    (same ``sequence_step``: exactly once) before its next step; ``stream.retry()`` does it now and returns its
    outputs."""

    def __init__(self, message: str, *, unknown: bool) -> None:
        super().__init__(message)
        self.unknown = unknown


class ConnectionLostError(RnnstreamError, ConnectionError):
    """The connection to the server broke before the answer came (the client reconnects and resends)."""


@dataclass(frozen=True)
class Answer:
    """A server's answer to one request: its outputs (one array per model output), or its refusal."""

    outputs: list[FloatArray] | None = None
    status: int = 200
    body: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def refused(cls, status: int, body: Mapping[str, Any]) -> Answer:
        return cls(None, status, body)

    @property
    def retryable(self) -> bool:
        return self.outputs is None and (bool(self.body.get("retryable")) or self.status in RETRYABLE_STATUS)

    def exception(self, sequence_id: str, step: int) -> RnnstreamError:
        """The error to raise for a refusal: StepOrderError for a step out of order (its ``expected`` is the
        number the server's stream takes next), ServerError for the rest."""
        message = str(self.body.get("error", f"the server answered {self.status}"))
        if self.status == 409 and isinstance(self.body.get("expected_step"), int):
            return StepOrderError(f"{message} (stream {sequence_id!r}, step {step})", stream_id=sequence_id,
                                  expected=self.body["expected_step"], received=step)
        return ServerError(f"{message} ({self.status}, stream {sequence_id!r}, step {step})", status=self.status,
                           body=self.body)
