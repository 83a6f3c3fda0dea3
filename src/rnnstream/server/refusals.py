"""What a server answers when a request fails: one table from error to status, for every transport.

An error body is JSON: ``{"error": message}``, plus ``expected_step`` for a step number out of order,
``limit`` (``{"name", "value", "limit"}``) for a request past one of the server's limits, and
``"retryable": true`` when the same request may succeed later (a conflict, a full server, a timeout).

>>> status_for(LimitError("max_prompt_tokens", 9000, 8192, "prompt tokens"))
400
>>> error_body(LimitError("max_prompt_tokens", 9000, 8192, "prompt tokens"))["limit"]
{'name': 'max_prompt_tokens', 'value': 9000, 'limit': 8192}
"""

from __future__ import annotations

from typing import Any, NamedTuple

from rnnstream.errors import (
    ConflictError,
    InputError,
    RnnstreamError,
    StepOrderError,
    StoreError,
    StreamLimitError,
    StreamNotFoundError,
)


class ProtocolError(RnnstreamError, ValueError):
    """A request does not follow the protocol; the message names the field."""


class NotFoundError(RnnstreamError, LookupError):
    """No such model (or route); the message lists what is served."""


class MethodNotAllowedError(RnnstreamError):
    """The route exists, but not for this method."""


class UnauthorizedError(RnnstreamError):
    """The bearer token is missing or wrong."""


class BodyTooLargeError(RnnstreamError):
    """The request body is larger than the server takes (``--max-body-bytes``)."""


class ModelInUseError(RnnstreamError):
    """A model version to unload still holds live streams (a 409); unload with force, or once they end."""


class LimitError(RnnstreamError):
    """A request goes past one of the server's limits: ``name`` (the ``ServerConfig`` field; its flag is
    ``--name-with-dashes``), the request's ``value`` and the ``limit``."""

    def __init__(self, name: str, value: int, limit: int, what: str, status: int = 400) -> None:
        flag = "--" + name.replace("_", "-")
        super().__init__(f"{what}: {value:,} is over this server's limit of {limit:,} ({name}, {flag})")
        self.name, self.value, self.limit, self.status = name, value, limit, status


class QueueTimeoutError(RnnstreamError, TimeoutError):
    """A request waited longer than the server's timeout for its batch; it was not applied."""


class ShuttingDownError(RnnstreamError):
    """The server is shutting down and takes no new requests."""


class GenerationLimitError(StreamLimitError):
    """The server is generating as many streams as it takes (a 503); retry later."""


class Outcome(NamedTuple):
    """How a server answers one kind of error: the HTTP status, and whether the same request may
    succeed later (it changed nothing; ``"retryable": true`` in the body)."""

    kind: type[Exception]
    status: int
    retryable: bool = False


OUTCOMES: list[Outcome] = [
    Outcome(ProtocolError, 400),
    Outcome(InputError, 400),
    Outcome(StreamNotFoundError, 400),
    Outcome(UnauthorizedError, 401),
    Outcome(NotFoundError, 404),
    Outcome(MethodNotAllowedError, 405),
    Outcome(StepOrderError, 409),
    Outcome(ConflictError, 409, retryable=True),
    Outcome(ModelInUseError, 409),
    Outcome(BodyTooLargeError, 413),
    Outcome(StreamLimitError, 503, retryable=True),
    Outcome(StoreError, 503, retryable=True),
    Outcome(ShuttingDownError, 503, retryable=True),
    Outcome(QueueTimeoutError, 504, retryable=True),
]
"""Every error a client can meet, first match wins; anything else is a bug: 500, not retryable. A
LimitError carries its own status (400, or 429 and retryable)."""


def outcome(error: Exception) -> Outcome:
    """How the server answers ``error``.

    >>> outcome(QueueTimeoutError("waited")).status, outcome(QueueTimeoutError("waited")).retryable
    (504, True)
    """
    if isinstance(error, LimitError):
        return Outcome(LimitError, error.status, retryable=error.status == 429)
    for known in OUTCOMES:
        if isinstance(error, known.kind):
            return known
    return Outcome(Exception, 500)


def status_for(error: Exception) -> int:
    """The HTTP status of ``error``: 4xx for what the client sent, 503/504 for a busy server, 500 for a bug."""
    return outcome(error).status


def error_body(error: Exception) -> dict[str, Any]:
    """The JSON body of ``error``'s reply (a bug's message is not shown: it is logged)."""
    answer = outcome(error)
    if answer.status == 500:
        return {"error": "internal error (logged by the server); please report it"}
    body: dict[str, Any] = {"error": str(error)}
    if isinstance(error, StepOrderError):
        body["expected_step"] = error.expected
    if isinstance(error, LimitError):
        body["limit"] = {"name": error.name, "value": error.value, "limit": error.limit}
    if answer.retryable:
        body["retryable"] = True
    return body
