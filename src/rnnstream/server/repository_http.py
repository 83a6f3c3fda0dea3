"""Triton's model repository extension over HTTP: ``POST /v2/repository/index``, and
``POST /v2/repository/models/{name}/load`` / ``…/unload`` (rnnstream.server.model_versions)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from rnnstream.errors import RnnstreamError
from rnnstream.server import model_versions
from rnnstream.server.asgi import error_response, read_body
from rnnstream.server.schema import RepositoryParameters, RepositoryRequest, decode

MAX_BODY = 65_536
"""A repository request's body is a few parameters."""


async def parameters(request: Request) -> RepositoryParameters:
    body = await read_body(request, MAX_BODY)
    parsed = decode(RepositoryRequest, body) if body.strip() else RepositoryRequest()
    return parsed.parameters or RepositoryParameters()


async def repository_index(request: Request) -> Response:
    return JSONResponse(model_versions.index(request.app.state.server))


async def load(request: Request) -> Response:
    try:
        await parameters(request)
        await model_versions.load(request.app.state.server, request.path_params["name"])
    except RnnstreamError as error:
        return error_response(error)
    return JSONResponse({})


async def unload(request: Request) -> Response:
    try:
        given = await parameters(request)
        await model_versions.unload(request.app.state.server, request.path_params["name"], given.version, given.force)
    except RnnstreamError as error:
        return error_response(error)
    return JSONResponse({})


def routes() -> list[BaseRoute]:
    return [
        Route("/v2/repository/index", repository_index, methods=["POST"]),
        Route("/v2/repository/models/{name}/load", load, methods=["POST"]),
        Route("/v2/repository/models/{name}/unload", unload, methods=["POST"]),
    ]
