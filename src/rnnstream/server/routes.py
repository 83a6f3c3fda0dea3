"""The server's own routes beside the transports: OIP v2 metadata and health, the model repository,
Prometheus metrics, the OpenAPI document, and JSON for Starlette's own refusals (404, 405).
"""

from __future__ import annotations

import asyncio

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from rnnstream import __version__
from rnnstream.server.asgi import error_response
from rnnstream.server.oip import model_metadata
from rnnstream.server.refusals import MethodNotAllowedError, NotFoundError, ProtocolError, error_body
from rnnstream.server.served import ServedModel, ServerState, shown
from rnnstream.server.triton_model import model_config, model_statistics

EXTENSIONS = ["binary_tensor_data", "sequence", "model_repository", "websocket"]
"""The protocol extensions the server metadata announces."""


def server_state(request: Request) -> ServerState:
    """The ServerState of the app serving ``request``."""
    state: ServerState = request.app.state.server
    return state


async def server_metadata(request: Request) -> Response:
    return JSONResponse({"name": "rnnstream", "version": __version__,
                         "extensions": EXTENSIONS})


async def live(request: Request) -> Response:
    return JSONResponse({"live": True})


async def ready(request: Request) -> Response:
    is_ready = server_state(request).ready
    return JSONResponse({"ready": is_ready}, status_code=200 if is_ready else 503)


async def list_models(request: Request) -> Response:
    state = server_state(request)
    return JSONResponse({"models": [{"name": n, "versions": list(v), "ready": state.ready}
                                    for n, v in state.versions.items()]})


async def model_info(request: Request) -> Response:
    try:
        served = server_state(request).find(request.path_params["name"], request.path_params.get("version"))
    except NotFoundError as error:
        return error_response(error)
    versions = list(server_state(request).versions[served.name])
    return JSONResponse(model_metadata(served.name, served.model, versions))


async def model_ready(request: Request) -> Response:
    state = server_state(request)
    try:
        state.find(request.path_params["name"], request.path_params.get("version"))
    except NotFoundError as error:
        return error_response(error)
    return JSONResponse({"name": request.path_params["name"], "ready": state.ready},
                        status_code=200 if state.ready else 503)


def _served(request: Request) -> ServedModel:
    """The model a route's path names (``name``, and ``version`` when given); NotFoundError if none."""
    return server_state(request).find(request.path_params["name"], request.path_params.get("version"))


async def model_configuration(request: Request) -> Response:
    """Triton's model configuration (rnnstream.server.triton_model), which perf_analyzer reads first."""
    try:
        return JSONResponse(model_config(server_state(request), _served(request)))
    except NotFoundError as error:
        return error_response(error)


async def statistics(request: Request) -> Response:
    """Triton's statistics extension: of each version of one model, of one version, or (``/v2/models/stats``)
    of every model."""
    try:
        return JSONResponse(model_statistics(server_state(request), request.path_params.get("name"),
                                             request.path_params.get("version")))
    except NotFoundError as error:
        return error_response(error)


async def metrics(request: Request) -> Response:
    """Prometheus' text format; rendered on a worker thread (the stream counts may ask a Redis store)."""
    text = await asyncio.to_thread(server_state(request).metrics.render)
    return Response(text, media_type=CONTENT_TYPE_LATEST)


async def openapi(request: Request) -> Response:
    return Response(request.app.state.openapi, media_type="application/json")


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (no such route, a method the route lacks) as JSON errors, like every other."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        error: Exception = MethodNotAllowedError(f"{request.url.path} does not take {request.method}")
    elif exc.status_code == 404:
        error = NotFoundError(f"no route {shown(request.url.path)}; the server's routes are in /v2/openapi.json")
    else:
        error = ProtocolError(str(exc.detail))
    return JSONResponse(error_body(error), status_code=exc.status_code, headers=exc.headers)


def routes() -> list[BaseRoute]:
    """Metadata, health, configuration, statistics, metrics and OpenAPI routes."""
    model_routes: list[BaseRoute] = []
    for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        model_routes += [Route(prefix, model_info), Route(prefix + "/ready", model_ready),
                         Route(prefix + "/config", model_configuration), Route(prefix + "/stats", statistics)]
    return [
        Route("/v2", server_metadata),
        Route("/v2/health/live", live),
        Route("/v2/health/ready", ready),
        Route("/v2/models", list_models),
        Route("/v2/models/stats", statistics),  # before /v2/models/{name}, which would take "stats" as a name
        *model_routes,
        Route("/metrics", metrics),
        Route("/v2/openapi.json", openapi),
    ]
