"""What the live page shows of any served model: its active streams, a watched stream's steps as they arrive,
and a CSV stepped through a stream.

- ``GET /v2/models/{name}/streams?limit=20``: ``{"model_name", "count", "streams": [{"id", "steps"}]}``, the
  model's live streams, most recently written first (the store's ``recent``: no scan; cached for a second).
- ``GET /v2/models/{name}/streams/{id}/watch?steps=200``: Server-Sent Events of the stream's steps as they
  settle, over every transport. The first event is ``{"model_name", "sequence_id", "steps_applied", "inputs",
  "outputs", "ring"}`` (the steps applied before the watch, the tensor names); then ``{"steps": [{"n", "start",
  "end", "inputs": {name: [...]}, "outputs": {name: [...]}}], "dropped": k}``, each tensor's first
  ``WATCH_VALUES`` numbers, ``dropped`` the steps a slow reader missed. The server keeps the last ``steps``
  steps of a watched stream only (rnnstream.server.watch_ring); an unwatched stream costs nothing.
- ``POST /v2/models/{name}/streams/{id}/csv[?start=false]``: the body's CSV rows (rnnstream.server.csv_steps)
  stepped in order through the stream, the first one starting it afresh unless ``start=false``; the reply is
  ``{"model_name", "sequence_id", "steps", "outputs": {name: [[...] per row]}}``.

Every size a client sets has a limit (``max_listed_streams``, ``max_watchers``, ``max_watch_steps``,
``max_csv_rows``); past one, a JSON 4xx (503 for watchers) names it.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncGenerator, Callable
from typing import Any

import numpy as np
import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from rnnstream.errors import RnnstreamError
from rnnstream.server import limits
from rnnstream.server.asgi import error_response, read_body
from rnnstream.server.csv_steps import csv_steps
from rnnstream.server.oip import check_id, step_request
from rnnstream.server.refusals import ProtocolError, error_body, status_for
from rnnstream.server.served import ServedModel, ServerState
from rnnstream.server.sse import EventStream
from rnnstream.server.watch_ring import Ring, Watches

LIST_CACHE_SECONDS = 1.0
"""How long a model's list of active streams is reused (the page polls it; a Redis store is asked once)."""
KEEPALIVE_SECONDS = 15.0
"""A watch with no step for this long sends an SSE comment, so proxies keep the connection open."""
DEFAULT_LIST, DEFAULT_RING = 20, 200


def number_param(request: Request, name: str, default: int) -> int:
    """A positive integer query parameter; ProtocolError (400) names it otherwise."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise ProtocolError(f"query parameter {name} must be a positive integer, got {raw[:40]!r}")
    return int(raw)


class WatchRoutes:
    """The routes of one app, its watches and its cache of stream lists."""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.watches = Watches(state)
        self.lists: dict[tuple[str, int], tuple[float, dict[str, Any]]] = {}

    async def streams(self, request: Request) -> Response:
        try:
            served = self.state.find(request.path_params["name"])
            limit = number_param(request, "limit", min(DEFAULT_LIST, self.state.config.max_listed_streams))
            limits.check("max_listed_streams", limit, self.state.config.max_listed_streams)
            key = (served.name, limit)
            cached = self.lists.get(key)
            if cached is None or time.monotonic() - cached[0] > LIST_CACHE_SECONDS:
                cached = (time.monotonic(), await asyncio.to_thread(listing, served, limit))
                self.lists[key] = cached
        except RnnstreamError as error:
            return error_response(error)
        return JSONResponse(cached[1])

    async def watch(self, request: Request) -> Response:
        name, stream_id = request.path_params["name"], request.path_params["stream_id"]
        try:
            served = self.state.find(name)
            check_id(stream_id, "sequence_id", self.state.config)
            length = number_param(request, "steps", min(DEFAULT_RING, self.state.config.max_watch_steps))
            ring = self.watches.watch(served, stream_id, length)
        except RnnstreamError as error:
            return error_response(error)
        return WatchStream(self.events(served, stream_id, ring),
                           functools.partial(self.watches.unwatch, served.name, stream_id))

    async def events(self, served: ServedModel, stream_id: str, ring: Ring) -> AsyncGenerator[bytes, None]:
        """The watch's events until the client leaves (the EventStream then closes this generator)."""
        applied = await asyncio.to_thread(served.streams.steps_applied, stream_id)
        yield event({"model_name": served.name, "sequence_id": stream_id, "steps_applied": applied,
                     "inputs": ring.input_names, "outputs": ring.output_names, "ring": ring.entries.maxlen})
        seen = 0
        while True:
            entries, dropped = ring.since(seen)
            if entries:
                seen = entries[-1]["n"]
                yield event({"steps": entries, "dropped": dropped})
                continue
            try:
                await asyncio.wait_for(ring.changed.wait(), KEEPALIVE_SECONDS)
            except TimeoutError:
                yield b": keepalive\n\n"

    async def csv(self, request: Request) -> Response:
        try:
            served = self.state.find(request.path_params["name"])
            stream_id = request.path_params["stream_id"]
            config = self.state.config
            body = await read_body(request, config.max_body_bytes)
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError:
                raise ProtocolError("the CSV body must be UTF-8 text") from None
            start = request.query_params.get("start", "true") != "false"
            rows = await asyncio.to_thread(csv_steps, served.model, text, max_rows=config.max_csv_rows)
            outputs, failed = await self.step_rows(served, stream_id, rows, start)
        except RnnstreamError as error:
            return error_response(error)
        if failed is not None:  # the rows before it were applied: say which row was refused and why
            row, refused = failed
            return JSONResponse({**error_body(refused), "row": row, "steps_applied": row - 1},
                                status_code=status_for(refused))
        reply = {"model_name": served.name, "sequence_id": stream_id, "steps": len(rows), "outputs": outputs}
        return Response(orjson.dumps(reply, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")

    async def step_rows(self, served: ServedModel, stream_id: str, rows: list[Any], start: bool
                        ) -> tuple[dict[str, list[Any]], tuple[int, RnnstreamError] | None]:
        """Step ``rows`` in order through the batcher (as any transport: watches see them): the outputs, and
        the row refused (numbered from 1) with its error, where the rows stopped."""
        outputs: dict[str, list[Any]] = {name: [] for name in served.model.output_names}
        for k, x in enumerate(rows):
            step = step_request(stream_id, start and k == 0, False, None, x, self.state.config)
            try:
                result = await self.state.enqueue(served, step)
            except RnnstreamError as error:
                return outputs, (k + 1, error)
            for name, value in served.outputs_by_name(result).items():
                outputs[name].append(np.asarray(value).reshape(-1))
        return outputs, None

    def routes(self) -> list[Route]:
        prefix = "/v2/models/{name}/streams"
        return [
            Route(prefix, self.streams),
            Route(prefix + "/{stream_id}/watch", self.watch),
            Route(prefix + "/{stream_id}/csv", self.csv, methods=["POST"]),
        ]


class WatchStream(EventStream):
    """A watch's events; the watch ends when its response does, however it ends (even before its first event)."""

    def __init__(self, events: AsyncGenerator[bytes, None], end: Callable[[], None]) -> None:
        super().__init__(events)
        self.end = end

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.end()


def listing(served: ServedModel, limit: int) -> dict[str, Any]:
    """On a worker thread: the model's ``limit`` most recent live streams with their steps, and the count."""
    store = served.streams.store
    ids = store.recent(limit)
    steps = store.load(ids).steps.tolist() if ids else []
    return {"model_name": served.name, "count": store.count(),
            "streams": [{"id": i, "steps": int(n)} for i, n in zip(ids, steps, strict=True)]}


def event(data: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(data) + b"\n\n"
