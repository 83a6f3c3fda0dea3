"""``POST /v2/models/{name}[/versions/{version}]/infer``, the endpoint that carries the load, in plain ASGI.

Starlette's per-request machinery (matching the path against every route, exception wrappers, Request
and Response objects) cost more than the rest of a step: measured on this 2-core machine with 1,000
streams, a trivial Starlette route answered 5.5k requests/s where the same reply in plain ASGI answered
10.7k. So this endpoint runs in front of Starlette (``ServerApp``'s front, behind ``BearerAuth`` only):
it takes the ``infer`` paths and passes everything else on. Run inside Starlette's error middleware
instead, an identity model's infer answered ~20% fewer requests per second (9.5k against 11.2–11.7k on
a Zen 4). An exception that is not an RnnstreamError (a bug) is logged and answered 500, as uvicorn does.

A request is answered through callbacks: ``start`` decodes it and queues its step, and the batcher calls
``answer`` with the outputs (or the error), which hands the response on. So the HTTP protocol
(rnnstream.server.protocol) answers small requests itself, without an ASGI task, a future or a turn of
the loop between the step and the write.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from rnnstream.errors import RnnstreamError
from rnnstream.server.asgi import ASGIApp, Receive, Scope, Send, receive_body
from rnnstream.server.metrics import labels_key
from rnnstream.server.oip import HEADER_LENGTH, InferCall, encode_infer, parse_infer
from rnnstream.server.refusals import MethodNotAllowedError, error_body, status_for
from rnnstream.server.served import ServedModel, ServerState
from rnnstream.step_request import Result

Headers = list[tuple[bytes, bytes]]
HEADER_LENGTH_KEY = HEADER_LENGTH.lower().encode()

logger = logging.getLogger(__name__)


@dataclass
class Reply:
    """An HTTP response: status, body and headers (content type and length included)."""

    status: int
    content: bytes
    headers: Headers


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
        self.answered = {name: labels_key(model=name, protocol="http", code="200") for name in state.models}
        """Each model's metric labels of a request answered 200."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        target = infer_target(scope["path"]) if scope["type"] == "http" else None
        if target is None:
            await self.app(scope, receive, send)
            return
        if scope["method"] != "POST":
            error = MethodNotAllowedError(f"{scope['path']} takes POST")
            reply = json_reply(405, error_body(error), [(b"allow", b"POST")])
        else:
            reply = await self.infer(*target, dict(scope["headers"]), receive)
        await send({"type": "http.response.start", "status": reply.status, "headers": reply.headers})
        await send({"type": "http.response.body", "body": reply.content})

    async def infer(self, name: str, version: str | None, headers: dict[bytes, bytes], receive: Receive) -> Reply:
        """One step: read the body, queue the step in the model's batcher, encode its outputs."""
        try:
            body = await receive_body(headers, receive, self.state.config.max_body_bytes)
        except RnnstreamError as error:
            return self.refuse(name, error)
        replied: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self.start(name, version, headers, body, replied.set_result)
        return await replied

    def start(
        self, name: str, version: str | None, headers: dict[bytes, bytes], body: bytes, reply: Callable[[Reply], None]
    ) -> None:
        """Decode ``body`` and queue its step; ``reply`` gets the response when the step is done, or at once
        when the request is refused (404, 400, 503...)."""
        try:
            served = self.state.find(name, version)
            request = parse_infer(served.model, body, headers.get(HEADER_LENGTH_KEY), self.state.config)
            self.state.submit(served, request.step, functools.partial(self.answer, served, request, reply),
                              pinned=version is not None)
        except RnnstreamError as error:
            reply(self.refuse(name, error))

    def answer(self, served: ServedModel, request: InferCall, reply: Callable[[Reply], None], result: Result) -> None:
        """Encode the step's outputs (or its error) and hand the response to ``reply``."""
        if isinstance(result, RnnstreamError):
            reply(self.refuse(served.name, result))
            return
        try:
            content, extra = encode_infer(served.name, request, served.outputs_by_name(result))
        except Exception as error:  # a bug: logged, and answered with a JSON 500
            logger.exception("the infer endpoint failed on a request for %r", served.name)
            reply(self.refuse(served.name, error))
            return
        self.state.metrics.requests.add(self.answered[served.name])
        media = b"application/octet-stream" if HEADER_LENGTH in extra else b"application/json"
        headers = [(b"content-type", media), (b"content-length", str(len(content)).encode())]
        headers += [(k.lower().encode(), v.encode()) for k, v in extra.items()]
        reply(Reply(200, content, headers))

    def refuse(self, name: str, error: Exception) -> Reply:
        """The error reply to a request for model ``name``, counted in the metrics."""
        code = status_for(error)
        self.state.metrics.refused(name, "http", error)
        return json_reply(code, error_body(error))


SERVER_ERROR = Reply(500, b'{"error":"internal error (logged by the server); please report it"}',
                     [(b"content-type", b"application/json"), (b"content-length", b"67")])


def json_reply(status: int, body: dict[str, Any], headers: Headers | None = None) -> Reply:
    content = orjson.dumps(body)
    return Reply(status, content, [(b"content-type", b"application/json"),
                                   (b"content-length", str(len(content)).encode()), *(headers or [])])
