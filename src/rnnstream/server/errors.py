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

from typing import Any

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


STATUS: list[tuple[type[Exception], int]] = [
    (ProtocolError, 400),
    (InputError, 400),
    (StreamNotFoundError, 400),
    (UnauthorizedError, 401),
    (NotFoundError, 404),
    (MethodNotAllowedError, 405),
    (StepOrderError, 409),
    (ConflictError, 409),
    (BodyTooLargeError, 413),
    (StreamLimitError, 503),
    (StoreError, 503),
    (ShuttingDownError, 503),
    (QueueTimeoutError, 504),
]

RETRYABLE = (ConflictError, QueueTimeoutError, StreamLimitError, StoreError, ShuttingDownError)
"""Errors after which the same request may succeed (it changed nothing)."""


def status_for(error: Exception) -> int:
    """The HTTP status of ``error``: 4xx for what the client sent, 503/504 for a busy server, 500 for a bug."""
    if isinstance(error, LimitError):
        return error.status
    for kind, status in STATUS:
        if isinstance(error, kind):
            return status
    return 500


def error_body(error: Exception) -> dict[str, Any]:
    """The JSON body of ``error``'s reply (a bug's message is not shown: it is logged)."""
    if status_for(error) == 500:
        return {"error": "internal error (logged by the server); please report it"}
    body: dict[str, Any] = {"error": str(error)}
    if isinstance(error, StepOrderError):
        body["expected_step"] = error.expected
    if isinstance(error, LimitError):
        body["limit"] = {"name": error.name, "value": error.value, "limit": error.limit}
    if isinstance(error, RETRYABLE) or (isinstance(error, LimitError) and error.status == 429):
        body["retryable"] = True
    return body
