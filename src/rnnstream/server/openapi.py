"""``GET /v2/openapi.json``: the server's HTTP API as an OpenAPI 3.1 document, from the request types.

The request bodies' schemas are generated from the same msgspec types that decode them
(``server/schema.py``), so the document cannot drift from what the server takes; the test suite runs
schemathesis against it. The WebSocket's messages (``StreamMessage``, ``StreamStep``, ``FrameHeader``)
are listed among the components for reference.

>>> document = json.loads(openapi_document("0.1.0"))
>>> document["openapi"], "/v2/models/{name}/infer" in document["paths"]
('3.1.0', True)
"""

from __future__ import annotations

import json
from typing import Any

import msgspec

from rnnstream.server.schema import (
    ErrorReply,
    ForecastRequest,
    FrameHeader,
    GenerateRequest,
    InferenceRequest,
    StreamMessage,
    StreamStep,
)

REF = "#/components/schemas/{name}"
_ERRORS = {"description": "a JSON error naming the field, the value and the limit",
           "content": {"application/json": {"schema": {"$ref": REF.format(name="ErrorReply")}}}}
_OBJECT = {"content": {"application/json": {"schema": {"type": "object"}}}}
_NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
_VERSION = {"name": "version", "in": "path", "required": True, "schema": {"type": "string"}}


def _get(summary: str, *, errors: bool = False, media: str = "application/json") -> dict[str, Any]:
    responses: dict[str, Any] = {"200": {"description": summary, "content": {media: {"schema": {}}}}}
    if errors:
        responses["4XX"] = _ERRORS
    return {"get": {"summary": summary, "responses": responses}}


def _post(summary: str, body: type, *, media: str = "application/json") -> dict[str, Any]:
    return {"post": {
        "summary": summary,
        "requestBody": {"required": True,
                        "content": {"application/json": {"schema": {"$ref": REF.format(name=body.__name__)}}}},
        "responses": {"200": {"description": summary, "content": {media: {"schema": {}}}}, "4XX": _ERRORS,
                      "503": _ERRORS, "504": _ERRORS},
    }}


def _with_params(operations: dict[str, Any], params: list[dict[str, Any]]) -> dict[str, Any]:
    return {"parameters": params, **operations}


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


def _watch_paths() -> dict[str, Any]:
    """The live page's routes (server/watch.py): a model's active streams, a watched stream's steps (SSE) and a
    CSV stepped through a stream."""
    prefix, stream = "/v2/models/{name}/streams", {"name": "stream_id", "in": "path", "required": True,
                                                   "schema": {"type": "string"}}
    listed = _get("the model's live streams, most recently written first", errors=True)
    listed["get"]["parameters"] = [_query("limit", "streams listed (at most max_listed_streams)",
                                          {"type": "integer", "minimum": 1})]
    watched = _get("a stream's steps as they settle (Server-Sent Events)", errors=True, media="text/event-stream")
    watched["get"]["parameters"] = [_query("steps", "steps kept for the watcher (at most max_watch_steps)",
                                           {"type": "integer", "minimum": 1})]
    csv = {"post": {
        "summary": "CSV rows stepped in order through the stream (at most max_csv_rows)",
        "parameters": [_query("start", "whether the first row starts the stream afresh",
                              {"type": "string", "enum": ["true", "false"]})],
        "requestBody": {"required": True, "content": {"text/csv": {"schema": {"type": "string"}}}},
        "responses": {"200": {"description": "every row's outputs", **_OBJECT}, "4XX": _ERRORS, "503": _ERRORS},
    }}
    return {
        prefix: _with_params(listed, [_NAME]),
        prefix + "/{stream_id}/watch": _with_params(watched, [_NAME, stream]),
        prefix + "/{stream_id}/csv": _with_params(csv, [_NAME, stream]),
    }


def openapi_document(version: str) -> bytes:
    """The document as JSON bytes (built once, at start-up)."""
    _, components = msgspec.json.schema_components(
        [InferenceRequest, GenerateRequest, ForecastRequest, ErrorReply, StreamMessage, StreamStep, FrameHeader],
        ref_template=REF,
    )
    paths: dict[str, Any] = {
        "/v2": _get("server metadata"),
        "/v2/health/live": _get("the server is live"),
        "/v2/health/ready": _get("the server is ready (503 while starting or draining)"),
        "/v2/models": _get("the served models"),
        "/v2/repository/index": {"post": {"summary": "the model repository", "responses": {"200": _OBJECT}}},
        "/v2/repository/models/{name}/load": _with_params(
            {"post": {"summary": "serve the newest version of a repository model",
                      "responses": {"200": {"description": "loaded", **_OBJECT}, "4XX": _ERRORS}}}, [_NAME]),
        "/v2/repository/models/{name}/unload": _with_params(
            {"post": {"summary": "stop serving a version of a repository model (409 with live streams)",
                      "responses": {"200": {"description": "unloaded", **_OBJECT}, "4XX": _ERRORS}}},
            [_NAME]),
        "/v2/stats": _get("every model's live figures over the last seconds"),
        "/v2/models/stats": _get("Triton's statistics of every model"),
        "/metrics": _get("Prometheus metrics", media="text/plain"),
    }
    for prefix, params in (("/v2/models/{name}", [_NAME]), ("/v2/models/{name}/versions/{version}", [_NAME, _VERSION])):
        paths[prefix] = _with_params(_get("model metadata", errors=True), params)
        paths[prefix + "/ready"] = _with_params(_get("the model is ready", errors=True), params)
        paths[prefix + "/config"] = _with_params(_get("Triton's model configuration", errors=True), params)
        paths[prefix + "/stats"] = _with_params(_get("Triton's statistics of the model", errors=True), params)
        paths[prefix + "/infer"] = _with_params(_post("one step of one sequence", InferenceRequest), params)
        paths[prefix + "/generate"] = _with_params(_post("a whole generation", GenerateRequest), params)
        paths[prefix + "/generate_stream"] = _with_params(
            _post("a generation as Server-Sent Events", GenerateRequest, media="text/event-stream"), params)
        paths[prefix + "/forecast"] = _with_params(_post("a forecast from a live stream", ForecastRequest), params)
    paths.update(_watch_paths())
    document = {
        "openapi": "3.1.0",
        "info": {"title": "rnnstream", "version": version,
                 "description": "The Open Inference Protocol v2 (KServe / Triton) with Triton's sequence and "
                                "generate extensions, and rnnstream's forecast endpoint. WebSocket: /v2/stream; "
                                "gRPC (Triton's GRPCInferenceService) on its own port."},
        "paths": paths,
        "components": {"schemas": components},
    }
    return json.dumps(document).encode()
