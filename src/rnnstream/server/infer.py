"""``POST /v2/models/{name}[/versions/{version}]/infer``, the endpoint that carries the load, in plain ASGI.

Starlette's per-request machinery (matching the path against every route, exception wrappers, Request
and Response objects) cost more than the rest of a step: measured on this 2-core machine with 1,000
streams, a trivial Starlette route answered 5.5k requests/s where the same reply in plain ASGI answered
10.7k. So this endpoint runs in front of Starlette (``ServerApp``'s front, behind ``BearerAuth`` only):
it takes the ``infer`` paths and passes everything else on. Run inside Starlette's error middleware
instead, an identity model's infer answered ~20% fewer requests per second (9.5k against 11.2–11.7k on
a Zen 4). An exception that is not an RnnstreamError (a bug) reaches uvicorn, which logs it and answers 500.
"""

from __future__ import annotations

from typing import Any

import orjson

from rnnstream.errors import RnnstreamError
from rnnstream.server.app import (
    ASGIApp,
    Receive,
    Scope,
    Send,
    ServerState,
    error_body,
    receive_body,
    status_for,
)
from rnnstream.server.oip import HEADER_LENGTH, encode_infer, parse_infer

Headers = list[tuple[bytes, bytes]]


def infer_target(path: str) -> tuple[str, str | None] | None:
    """``(model name, version or None)`` when ``path`` is an infer path, else None.

    >>> infer_target("/v2/models/seed/infer"), infer_target("/v2/models/seed/versions/1/infer")
    (('seed', None), ('seed', '1'))
    >>> infer_target("/v2/models/seed/ready") is None
    True
    """
    parts = path.split("/")  # "", "v2", "models", name, ["versions", version,] "infer"
    if parts[-1] != "infer" or parts[1:3] != ["v2", "models"] or not parts[3]:
        return None
    if len(parts) == 5:
        return parts[3], None
    if len(parts) == 7 and parts[4] == "versions":
        return parts[3], parts[5]
    return None


class InferEndpoint:
    """ASGI middleware answering infer requests itself; every other request goes on to ``app``."""

    def __init__(self, app: ASGIApp, state: ServerState) -> None:
        self.app, self.state = app, state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        target = infer_target(scope["path"]) if scope["type"] == "http" else None
        if target is None:
            await self.app(scope, receive, send)
            return
        if scope["method"] != "POST":
            status, content, headers = _json(405, {"error": f"{scope['path']} takes POST"}, [(b"allow", b"POST")])
        else:
            status, content, headers = await self.infer(*target, dict(scope["headers"]), receive)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": content})

    async def infer(
        self, name: str, version: str | None, headers: dict[bytes, bytes], receive: Receive
    ) -> tuple[int, bytes, Headers]:
        """One step: decode the body, queue the step in the model's batcher, encode its outputs."""
        state = self.state
        try:
            served = state.find(name, version)
        except LookupError as error:
            return _json(404, {"error": str(error)})
        try:
            body = await receive_body(headers, receive, state.config.max_body_bytes)
            header_length = headers.get(HEADER_LENGTH.lower().encode())
            decoded = parse_infer(served.model, body, None if header_length is None else header_length.decode())
            result = await served.batcher.submit(decoded.step)
            content, extra = encode_infer(name, decoded, served.outputs_by_name(result))
        except RnnstreamError as error:
            code = status_for(error)
            state.metrics.requests.inc(model=name, protocol="http", code=str(code))
            state.metrics.errors.inc(model=name, error=type(error).__name__)
            return _json(code, error_body(error))
        state.metrics.requests.inc(model=name, protocol="http", code="200")
        media = b"application/octet-stream" if HEADER_LENGTH in extra else b"application/json"
        response_headers = [(b"content-type", media), (b"content-length", str(len(content)).encode())]
        response_headers += [(k.lower().encode(), v.encode()) for k, v in extra.items()]
        return 200, content, response_headers


def _json(status: int, body: dict[str, Any], headers: Headers | None = None) -> tuple[int, bytes, Headers]:
    content = orjson.dumps(body)
    return status, content, [(b"content-type", b"application/json"),
                             (b"content-length", str(len(content)).encode()), *(headers or [])]
