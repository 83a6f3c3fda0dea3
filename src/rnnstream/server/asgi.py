"""Plain ASGI for the server's routes: the callable types, reading a body under its limit, JSON error
replies, and bearer-token auth in front of every route but the public ones.

>>> bearer_matches(b"Bearer s3cret", "s3cret"), bearer_matches(b"bearer s3cret", "s3cret")
(True, True)
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from rnnstream.server.refusals import BodyTooLargeError, ProtocolError, UnauthorizedError, error_body, status_for

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PUBLIC_PATHS = ("/v2/health/live", "/v2/health/ready", "/")
PUBLIC_PREFIX = "/static/"
"""Health checks, the live page and its static files need no token (the page sends it on its requests)."""


def error_response(error: Exception) -> JSONResponse:
    """The JSON reply to ``error``, with its status (rnnstream.server.refusals)."""
    return JSONResponse(error_body(error), status_code=status_for(error))


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) one larger than ``limit`` bytes before reading it all."""
    return await receive_body(dict(request.scope["headers"]), request.receive, limit)


async def receive_body(headers: dict[bytes, bytes], receive: Receive, limit: int) -> bytes:
    """The body of a plain ASGI request, refused (413) when larger than ``limit`` bytes, before it is
    read when its content-length says so."""
    declared = headers.get(b"content-length", b"")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLargeError(f"the request body is {declared.decode()} bytes; the limit is {limit}")
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ProtocolError("the client left before it sent the whole body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLargeError(f"the request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)


def bearer_matches(given: bytes, token: str) -> bool:
    """Whether an ``Authorization`` header value is ``Bearer <token>``: the scheme in any case (RFC 9110),
    the token compared in constant time.

    >>> bearer_matches(b"Bearer s3cret", "s3cret"), bearer_matches(b"bearer s3cret", "s3cret")
    (True, True)
    >>> bearer_matches(b"Bearer nope", "s3cret"), bearer_matches(b"Basic s3cret", "s3cret")
    (False, False)
    """
    scheme, _, credentials = given.partition(b" ")
    return scheme.lower() == b"bearer" and hmac.compare_digest(credentials.strip(b" "), token.encode())


class BearerAuth:
    """Refuse (401) any request but the public paths without ``Authorization: Bearer <token>``."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app, self.token = app, token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")  # a lifespan scope has none
        if self.token is None or scope["type"] not in ("http", "websocket") or path in PUBLIC_PATHS \
                or path.startswith(PUBLIC_PREFIX):
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers", [])).get(b"authorization", b"")  # ASGI names are lower-case
        if bearer_matches(given, self.token):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": "missing or wrong bearer token"})
            return
        response = error_response(UnauthorizedError("missing or wrong bearer token (Authorization: Bearer ...)"))
        await response(scope, receive, send)
