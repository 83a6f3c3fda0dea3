"""The HTTP server: Open Inference Protocol v2 routes, WebSocket, metrics, auth and limits (Starlette).

Every step goes through the model's Batcher; the engine never runs on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import os
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute

from rnnstream import __version__
from rnnstream.model import StreamModel
from rnnstream.server.batcher import Batcher
from rnnstream.server.config import ServerConfig, load_models, sidecars
from rnnstream.server.errors import (
    BodyTooLargeError,
    MethodNotAllowedError,
    NotFoundError,
    ProtocolError,
    UnauthorizedError,
    error_body,
    status_for,
)
from rnnstream.server.metrics import Metrics
from rnnstream.server.oip import model_metadata
from rnnstream.streams import Streams

CONFIG_ENV = "RNNSTREAM_SERVE_CONFIG"
GC_YOUNG_THRESHOLD = 10_000
"""Net allocations of objects between collections of the youngest generation while serving (Python: 700)."""
PUBLIC_PATHS = ("/v2/health/live", "/v2/health/ready", "/")
PUBLIC_PREFIX = "/static/"
"""Health checks, the live page and its static files need no token (the page sends it on its requests)."""


@dataclass
class ServedModel:
    name: str
    model: StreamModel
    streams: Streams
    batcher: Batcher

    def outputs_by_name(self, result: Any) -> dict[str, Any]:
        values = result if isinstance(result, list) else [result]
        return dict(zip(self.model.output_names, values, strict=True))


class ServerState:
    """The served models and the metrics, shared by every route."""

    def __init__(self, config: ServerConfig, models: dict[str, StreamModel]) -> None:
        self.config = config
        self.metrics = Metrics(models)
        self.models: dict[str, ServedModel] = {}
        for name, model in models.items():
            streams = Streams(model, config.store, ttl=config.ttl, max_streams=config.max_streams)
            batcher = Batcher(streams, name=name, max_batch=config.max_batch,
                              max_delay=config.max_delay_ms / 1000, timeout=config.timeout, metrics=self.metrics,
                              check_finite=not config.allow_nonfinite)
            self.models[name] = ServedModel(name, model, streams, batcher)
            self.metrics.active_streams[name] = streams.__len__
        self.ready = False

    def find(self, name: str, version: str | None = None) -> ServedModel:
        """The served model ``name`` (version ``1`` or none); NotFoundError (a 404) lists the served ones."""
        served = self.models.get(name)
        if served is None or version not in (None, "1"):
            known = ", ".join(sorted(self.models))
            which = _shown(name) + (f" version {_shown(version)}" if version else "")
            raise NotFoundError(f"no model {which}; serving {known}")
        return served


def _shown(name: str) -> str:
    """A name from a request, quoted and cut short for an error message."""
    return repr(name if len(name) <= 80 else name[:77] + "...")


def error_response(error: Exception) -> JSONResponse:
    return JSONResponse(error_body(error), status_code=status_for(error))


def _state(request: Request) -> ServerState:
    state: ServerState = request.app.state.server
    return state


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


# -- routes ------------------------------------------------------------------------------------------


async def server_metadata(request: Request) -> Response:
    return JSONResponse({"name": "rnnstream", "version": __version__,
                         "extensions": ["binary_tensor_data", "sequence", "model_repository", "websocket"]})


async def live(request: Request) -> Response:
    return JSONResponse({"live": True})


async def ready(request: Request) -> Response:
    is_ready = _state(request).ready
    return JSONResponse({"ready": is_ready}, status_code=200 if is_ready else 503)


async def list_models(request: Request) -> Response:
    state = _state(request)
    return JSONResponse({"models": [{"name": n, "versions": ["1"], "ready": state.ready} for n in state.models]})


async def repository_index(request: Request) -> Response:
    return JSONResponse([{"name": n, "version": "1", "state": "READY"} for n in _state(request).models])


async def model_info(request: Request) -> Response:
    try:
        served = _state(request).find(request.path_params["name"], request.path_params.get("version"))
    except NotFoundError as error:
        return error_response(error)
    return JSONResponse(model_metadata(served.name, served.model))


async def model_ready(request: Request) -> Response:
    state = _state(request)
    try:
        state.find(request.path_params["name"], request.path_params.get("version"))
    except NotFoundError as error:
        return error_response(error)
    return JSONResponse({"name": request.path_params["name"], "ready": state.ready},
                        status_code=200 if state.ready else 503)


async def metrics(request: Request) -> Response:
    """Prometheus' text format; rendered on a worker thread (the stream counts may ask a Redis store)."""
    text = await asyncio.to_thread(_state(request).metrics.render)
    return Response(text, media_type=CONTENT_TYPE_LATEST)


async def openapi(request: Request) -> Response:
    return Response(request.app.state.openapi, media_type="application/json")


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (no such route, a method the route lacks) as JSON errors, like every other."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        error: Exception = MethodNotAllowedError(f"{request.url.path} does not take {request.method}")
    elif exc.status_code == 404:
        error = NotFoundError(f"no route {_shown(request.url.path)}; the server's routes are in /v2/openapi.json")
    else:
        error = ProtocolError(str(exc.detail))
    return JSONResponse(error_body(error), status_code=exc.status_code, headers=exc.headers)


# -- the app -----------------------------------------------------------------------------------------

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


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


class ServerApp(Starlette):
    """Starlette behind a front of plain ASGI middleware (auth, then the infer endpoint) that runs before
    Starlette's own stack: its error wrapper and router cost ~10% of an infer request's CPU. The HTTP
    protocol (rnnstream.server.protocol) finds ``infer_endpoint`` here to answer small infer requests
    without ASGI."""

    def __init__(self, *args: Any, state: ServerState, token: str | None, **kwargs: Any) -> None:
        from rnnstream.server.infer import InferEndpoint  # it imports this module

        super().__init__(*args, **kwargs)
        self.infer_endpoint = InferEndpoint(super().__call__, state)
        self._front = BearerAuth(self.infer_endpoint, token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._front(scope, receive, send)


def create_app(config: ServerConfig | None = None, models: dict[str, StreamModel] | None = None) -> Starlette:
    """The ASGI app serving ``models`` (default: the ones ``config`` names) under ``config``."""
    from rnnstream.server import forecast, generate
    from rnnstream.server.live import LivePage
    from rnnstream.server.openapi import openapi_document
    from rnnstream.server.ws import stream_socket

    config = config or ServerConfig()
    if models is None:
        models = load_models(config.models, config.threads)
    state = ServerState(config, models)
    notes = sidecars(config.models)
    tokens = generate.TokenServices(state, notes)
    page = LivePage(state, tokens)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        for served in state.models.values():
            served.batcher.start()
        # What start-up made (modules, models) lives as long as the server: out of the collector's way, a
        # full collection scans only what requests make (it was a tail-latency spike of several ms).
        # And the youngest generation is collected every GC_YOUNG_THRESHOLD (not 700) net allocations:
        # with 1,000 requests in flight, their own objects crossed 700 over and over, so the collector ran
        # ~200 young and ~20 middle collections a second (2.4 ms each), ~9% of the loop (HTTP, identity).
        gc.collect()
        gc.freeze()
        gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
        state.ready = True
        yield
        state.ready = False
        for served in state.models.values():
            await served.batcher.close()
            served.streams.close_store()

    model_routes = []
    for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        model_routes += [
            Route(prefix, model_info),
            Route(prefix + "/ready", model_ready),
        ]
    app = ServerApp(
        routes=[
            Route("/v2", server_metadata),
            Route("/v2/health/live", live),
            Route("/v2/health/ready", ready),
            Route("/v2/models", list_models),
            Route("/v2/repository/index", repository_index, methods=["POST"]),
            *model_routes,
            *generate.routes(),
            *forecast.routes(),
            Route("/metrics", metrics),
            Route("/v2/openapi.json", openapi),
            WebSocketRoute("/v2/stream", stream_socket),
            *page.routes(),
        ],
        lifespan=lifespan,
        exception_handlers={HTTPException: http_error},
        state=state,
        token=config.token,
    )
    app.state.openapi = openapi_document(__version__)
    app.state.server = state
    app.state.tokens = tokens
    app.state.sidecars = notes
    return app


def app_from_env() -> Starlette:
    """The app of a worker process started by ``rnnstream serve --workers N`` (config in the environment)."""
    from rnnstream.server.run import tune_process

    tune_process()  # each worker is a process of its own: its allocator and thread pools need the same settings
    return create_app(ServerConfig.from_json(os.environ[CONFIG_ENV]))
