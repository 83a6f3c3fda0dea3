"""The client's WebSocket transport: every stream's requests on one socket to ``/v2/stream``, in binary frames.

Requests sent while a frame is being written go together in the next frame (one per model, at most
``MAX_FRAME_REQUESTS`` requests); answers are matched to requests by their ``id``. When the socket breaks,
every request sent on it and not answered fails with ConnectionLostError (the retry policy resends it, exactly
once by its ``sequence_step``) and the next request opens a new socket.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection, connect

from rnnstream.client.outcomes import Answer, ConnectionLostError, ServerError
from rnnstream.client.retry import ClientStats
from rnnstream.client.wire import Call, ModelInfo, decode_frame_reply, encode_frame, frame_outputs, split_outputs

logger = logging.getLogger(__name__)
MAX_FRAME_REQUESTS = 256
"""Requests in one frame at most (the server takes up to ``--max-ws-requests``, 4,096 by default)."""
MAX_FRAME_BYTES = 1 << 20
"""Input bytes in one frame at most, far below the server's ``--max-body-bytes`` (16 MiB by default)."""


@dataclass(eq=False)
class Frame:
    """One frame sent: its socket, its model and its requests' ids (the answer to one frame is one frame)."""

    socket: ClientConnection
    model: ModelInfo
    ids: list[int]


class WebSocketTransport:
    """One WebSocket to ``url`` (``http://host:port`` or ``ws://host:port``), opened on the first request and
    again after it breaks (counted in ``stats.reconnects``)."""

    def __init__(self, url: str, headers: Mapping[str, str], stats: ClientStats) -> None:
        self.url = url.rstrip("/").replace("http://", "ws://", 1).replace("https://", "wss://", 1) + "/v2/stream"
        self.headers, self.stats = dict(headers), stats
        self.socket: ClientConnection | None = None
        self._connecting = asyncio.Lock()
        self._ids = itertools.count(1)
        self._waiting: dict[int, tuple[asyncio.Future[Answer], Call]] = {}
        self._frames: dict[int, Frame] = {}  # request id -> the frame it went in, until the frame's answer
        self._outbox: list[tuple[int, Call]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def send(self, call: Call) -> Answer:
        """One single-step request: its answer, or ConnectionLostError when the socket broke before it."""
        k = next(self._ids)
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._waiting[k] = (future, call)
        self._outbox.append((k, call))
        if len(self._outbox) == 1:  # the first of a frame: the flush runs once the senders now running have queued
            self._spawn(self._flush())
        try:
            return await future
        finally:
            self._waiting.pop(k, None)

    async def aclose(self) -> None:
        if self.socket is not None:
            await self.socket.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _flush(self) -> None:
        await asyncio.sleep(0)
        batch, self._outbox = self._outbox, []
        try:
            socket = await self._connect()
        except (ConnectionLostError, ServerError) as error:
            for k, _ in batch:
                self._fail(k, error)
            return
        for model, group in _frames(batch):
            frame = Frame(socket, model, [k for k, _ in group])
            self._frames.update(dict.fromkeys(frame.ids, frame))
            try:
                await socket.send(encode_frame(model.name, group))
            except (websockets.ConnectionClosed, OSError) as error:
                self._lost(socket, error)

    async def _connect(self) -> ClientConnection:
        async with self._connecting:
            if self.socket is not None:
                return self.socket
            try:
                socket = await connect(self.url, additional_headers=self.headers, max_size=64 << 20,
                                       open_timeout=10)
            except websockets.InvalidStatus as error:
                status = error.response.status_code
                if status >= 500 or status == 429:
                    raise ConnectionLostError(f"{self.url}: the server answered {status}") from error
                raise ServerError(f"{self.url}: the server refused the WebSocket ({status}): "
                                  f"{error.response.body!r}", status=status, body={}) from error
            except (OSError, TimeoutError, websockets.InvalidHandshake) as error:
                raise ConnectionLostError(f"{self.url}: {error!r}") from error
            self.stats.reconnects += self.stats.sockets > 0
            self.stats.sockets += 1
            self.socket = socket
            self._spawn(self._read(socket))
            return socket

    async def _read(self, socket: ClientConnection) -> None:
        cause: BaseException = ConnectionLostError("the socket closed")
        try:
            async for message in socket:
                if isinstance(message, bytes):
                    self._answer(message)
                else:
                    await self._refused(socket, json.loads(message))
        except websockets.ConnectionClosed as error:
            cause = error
        except (ValueError, KeyError) as error:  # not the server's frames: start again on a new socket
            logger.warning("unreadable answer on %s: %r", self.url, error)
            cause = error
        finally:
            self._lost(socket, cause)

    def _answer(self, data: bytes) -> None:
        """Each request of one frame's answer gets its outputs or its refusal."""
        responses, values = decode_frame_reply(data)
        frames = [self._frames.pop(r["id"]) for r in responses if r.get("id") in self._frames]
        if not frames:  # every request of the frame was given up on (its deadline passed)
            return
        for response, found in zip(responses, frame_outputs(responses, values, frames[0].model.output_size),
                                   strict=True):
            waiting = self._waiting.get(response.get("id", -1))
            if waiting is None or waiting[0].done():
                continue
            if found is None:
                waiting[0].set_result(Answer.refused(int(response.get("code", 500)), response))
            else:
                waiting[0].set_result(Answer(split_outputs(waiting[1].model, found, None)))

    async def _refused(self, socket: ClientConnection, body: dict[str, object]) -> None:
        """A whole frame refused (a JSON error without an id): the frame's requests get it when one frame is in
        flight on the socket; otherwise which frame is unknown, so the socket starts again (all are resent)."""
        frames = {id(f): f for f in self._frames.values() if f.socket is socket}
        if len(frames) != 1:
            await socket.close()
            return
        (frame,) = frames.values()
        code = body.get("code")
        for k in frame.ids:
            self._frames.pop(k, None)
            waiting = self._waiting.get(k)
            if waiting is not None and not waiting[0].done():
                waiting[0].set_result(Answer.refused(code if isinstance(code, int) else 500, body))

    def _lost(self, socket: ClientConnection, cause: BaseException) -> None:
        """The socket broke: every request sent on it and not answered fails (and is resent by its stream)."""
        if self.socket is socket:
            self.socket = None
        for k, frame in list(self._frames.items()):
            if frame.socket is socket:
                del self._frames[k]
                self._fail(k, ConnectionLostError(f"{self.url}: {cause!r}"))

    def _fail(self, k: int, error: Exception) -> None:
        waiting = self._waiting.get(k)
        if waiting is not None and not waiting[0].done():
            waiting[0].set_exception(error)


def _frames(batch: list[tuple[int, Call]]) -> list[tuple[ModelInfo, list[tuple[int, Call]]]]:
    """The requests grouped by model, in frames of at most MAX_FRAME_REQUESTS requests and MAX_FRAME_BYTES."""
    found: list[tuple[ModelInfo, list[tuple[int, Call]]]] = []
    by_model: dict[str, list[tuple[int, Call]]] = {}
    for k, call in batch:
        by_model.setdefault(call.model.name, []).append((k, call))
    for group in by_model.values():
        frame: list[tuple[int, Call]] = []
        size = 0
        for k, call in group:
            nbytes = sum(x.nbytes for x in call.inputs)
            if frame and (len(frame) == MAX_FRAME_REQUESTS or size + nbytes > MAX_FRAME_BYTES):
                found.append((frame[0][1].model, frame))
                frame, size = [], 0
            frame.append((k, call))
            size += nbytes
        found.append((group[0][1].model, frame))
    return found
