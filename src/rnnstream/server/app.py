"""The server's assembly: the served models' state, every transport's routes, auth, the lifespan.

A transport is one module that exposes ``routes()`` (Starlette routes reading ``app.state.server``, a
:class:`~rnnstream.server.served.ServerState`) or a listener of its own started in the lifespan (gRPC:
``grpc_service.start_server``); adding one is one line in :func:`create_app`. The infer
endpoint and auth run in front of Starlette (:class:`ServerApp`), and the HTTP protocol
(rnnstream.server.protocol) answers small infer requests without ASGI at all.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException

from rnnstream import __version__
from rnnstream.model import StreamModel
from rnnstream.server import forecast_http, generate_http, grpc_service, repository_http, routes, watch, ws
from rnnstream.server.asgi import BearerAuth, Receive, Scope, Send
from rnnstream.server.config import ServerConfig, sidecars
from rnnstream.server.infer import InferEndpoint
from rnnstream.server.live import LivePage
from rnnstream.server.openapi import openapi_document
from rnnstream.server.process import tune_gc, tune_process
from rnnstream.server.served import ServerState

CONFIG_ENV = "RNNSTREAM_SERVE_CONFIG"
"""The environment variable that hands ``rnnstream serve --workers N``'s config to its worker processes."""


class ServerApp(Starlette):
    """Starlette behind a front of plain ASGI middleware (auth, then the infer endpoint) that runs before
    Starlette's own stack: its error wrapper and router cost ~10% of an infer request's CPU. The HTTP
    protocol (rnnstream.server.protocol) finds ``infer_endpoint`` here to answer small infer requests
    without ASGI."""

    def __init__(self, *args: Any, state: ServerState, token: str | None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.infer_endpoint = InferEndpoint(super().__call__, state)
        self.front = BearerAuth(self.infer_endpoint, token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.front(scope, receive, send)


def create_app(config: ServerConfig | None = None, models: dict[str, StreamModel] | None = None) -> Starlette:
    """The ASGI app serving ``models`` (default: the ones ``config`` names) under ``config``.

    >>> app = create_app(ServerConfig(models=["builtin:identity"]))
    >>> sorted(app.state.server.models)
    ['identity']
    """
    config = config or ServerConfig()
    state = ServerState(config, models)
    notes = sidecars(config.model_specs)
    tokens = generate_http.TokenServices(state, notes)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        for served in state.models.values():
            served.batcher.start()
        grpc_server = None
        if config.grpc_address is not None:
            grpc_server = await grpc_service.start_server(state, config.grpc_address)
            state.grpc_port = grpc_server.port
        state.ready = True
        yield
        state.ready = False
        if grpc_server is not None:
            await grpc_server.stop()
        for served in state.models.values():
            await served.batcher.close()
            served.streams.close_store()

    app = ServerApp(
        routes=[
            *routes.routes(),
            *repository_http.routes(),
            *generate_http.routes(),
            *forecast_http.routes(),
            *ws.routes(),
            *LivePage(state, tokens, notes).routes(),
            *watch.WatchRoutes(state).routes(),
        ],
        lifespan=lifespan,
        exception_handlers={HTTPException: routes.http_error},
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
    tune_process()  # each worker is a process of its own: its allocator and thread pools need the same settings
    app = create_app(ServerConfig.from_json(os.environ[CONFIG_ENV]))
    tune_gc()
    return app
