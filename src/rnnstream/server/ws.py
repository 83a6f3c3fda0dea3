"""``/v2/stream``: a WebSocket for long-lived streams. One socket carries any number of stream ids.

Text frames are JSON. A request::

    {"model": "seed", "id": "r1", "sequence_id": "sensor-1", "inputs": {"input": [0.1, 0.2, 0.3, 0.4]},
     "sequence_start": true, "sequence_end": false, "sequence_step": 1}

(``inputs`` may be a bare list for a one-input model), or ``{"requests": [...]}`` for several. Each
request gets ``{"id", "sequence_id", "outputs": {"output": [...]}}`` or ``{"id", "sequence_id",
"error", "code"}`` (several: ``{"responses": [...]}`` in order). Errors never close the socket.

Binary frames are ``uint32 little-endian header length | JSON header | values``: the header is
``{"model", "requests": [{"id", "sequence_id", ...}]}`` and the values are each request's inputs in
model input order (float32, or int64 token ids). The reply has ``{"responses": [...]}`` and the
successful requests' outputs as float32, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections import Counter
from typing import Any

import numpy as np
import orjson
from starlette.websockets import WebSocket, WebSocketDisconnect

from rnnstream.errors import RnnstreamError
from rnnstream.server.app import ServedModel, ServerState, error_body, status_for
from rnnstream.server.oip import ProtocolError
from rnnstream.stepping import StepRequest

_LENGTH = struct.Struct("<I")


def _step_request(served: ServedModel, entry: dict[str, Any], x: Any) -> StepRequest:
    sequence_id = entry.get("sequence_id")
    if isinstance(sequence_id, bool) or not isinstance(sequence_id, int | str) or sequence_id in (0, ""):
        raise ProtocolError(f"sequence_id must be a non-zero integer or a non-empty string, got {sequence_id!r}")
    number = entry.get("sequence_step")
    if number is not None and (isinstance(number, bool) or not isinstance(number, int) or number < 1):
        raise ProtocolError(f"sequence_step must be an integer from 1, got {number!r}")
    start, end = entry.get("sequence_start", False), entry.get("sequence_end", False)
    if not isinstance(start, bool) or not isinstance(end, bool):
        raise ProtocolError("sequence_start and sequence_end must be true or false")
    return StepRequest(str(sequence_id), x, number, start=start, end=end, must_exist=not start)


def _json_inputs(served: ServedModel, entry: dict[str, Any]) -> Any:
    inputs = entry.get("inputs")
    specs = served.model.inputs
    if isinstance(inputs, list) and len(specs) == 1:
        inputs = {specs[0].name: inputs}
    if not isinstance(inputs, dict) or sorted(inputs) != sorted(s.name for s in specs):
        raise ProtocolError(f"'inputs' must give every model input {[s.name for s in specs]}")
    arrays = {s.name: np.asarray(inputs[s.name], dtype=np.int64 if s.spec.dtype == "int64" else np.float32)
              for s in specs}
    return arrays[specs[0].name] if len(specs) == 1 else arrays


class StreamSocket:
    """One connection: requests are queued as they arrive (so each stream keeps its order) and
    answered as their batches finish."""

    def __init__(self, websocket: WebSocket, state: ServerState) -> None:
        self.websocket, self.state = websocket, state
        self._send_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()

    def _served(self, name: Any) -> ServedModel:
        try:
            return self.state.find(str(name))
        except LookupError as error:
            raise ProtocolError(str(error)) from None

    async def run(self) -> None:
        await self.websocket.accept()
        with contextlib.suppress(WebSocketDisconnect):  # the client hung up: finish what it sent
            while True:
                message = await self.websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                if message.get("bytes") is not None:
                    self._spawn(self._binary(message["bytes"]))
                elif message.get("text") is not None:
                    self._spawn(self._text(message["text"]))
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, text: str | None = None, data: bytes | None = None) -> None:
        async with self._send_lock:
            with contextlib.suppress(WebSocketDisconnect, RuntimeError):  # the client left: nowhere to send
                if data is not None:
                    await self.websocket.send_bytes(data)
                else:
                    await self.websocket.send_text(text or "")

    async def _send_json(self, message: Any) -> None:
        await self._send(orjson.dumps(message).decode())

    def _submit(self, served: ServedModel, request: StepRequest) -> asyncio.Future[Any]:
        """Queue now (this keeps per-stream order); the future resolves when the batch is done."""
        return served.batcher.enqueue(request)

    def _count(self, outcomes: list[tuple[str, Exception | None]]) -> None:
        """Count one message's requests: ``(model, error or None)`` each, one increment per label set."""
        codes = Counter((model, "200" if error is None else str(status_for(error))) for model, error in outcomes)
        for (model, code), n in codes.items():
            self.state.metrics.requests.inc(n, model=model, protocol="websocket", code=code)
        for model, error in outcomes:
            if error is not None:
                self.state.metrics.errors.inc(model=model, error=type(error).__name__)

    async def _text(self, text: str) -> None:
        try:
            message = orjson.loads(text)
            if not isinstance(message, dict):
                raise ProtocolError("a message is a JSON object")
        except (orjson.JSONDecodeError, ProtocolError) as error:
            await self._send_json({"error": f"not a valid request: {error}", "code": 400})
            return
        entries = message.get("requests") if "requests" in message else [message]
        if not isinstance(entries, list):
            await self._send_json({"error": "'requests' must be a list", "code": 400})
            return
        pending: list[tuple[dict[str, Any], str, asyncio.Future[Any] | Exception]] = []
        for entry in entries:
            model_name = str(entry.get("model", message.get("model", ""))) if isinstance(entry, dict) else ""
            try:
                if not isinstance(entry, dict):
                    raise ProtocolError("each request is a JSON object")
                served = self._served(model_name)
                request = _step_request(served, entry, _json_inputs(served, entry))
                pending.append((entry, model_name, self._submit(served, request)))
            except RnnstreamError as error:
                pending.append((entry if isinstance(entry, dict) else {}, model_name, error))
        responses, counted = [], []
        for entry, model_name, outcome in pending:
            reply, result, failure = await self._outcome(entry, outcome)
            if result is not None:
                outputs = self._served(model_name).outputs_by_name(result)
                reply["outputs"] = {k: np.asarray(v).reshape(-1).tolist() for k, v in outputs.items()}
            responses.append(reply)
            counted.append((model_name, failure))
        self._count(counted)
        await self._send_json(responses[0] if "requests" not in message else {"responses": responses})

    async def _outcome(
        self, entry: dict[str, Any], outcome: asyncio.Future[Any] | Exception
    ) -> tuple[dict[str, Any], Any, Exception | None]:
        """The reply head of one request, its result (None if it failed) and its error (in the reply too)."""
        reply: dict[str, Any] = {"id": entry.get("id"), "sequence_id": entry.get("sequence_id")}
        failure: Exception | None = outcome if isinstance(outcome, Exception) else None
        result = None
        if isinstance(outcome, asyncio.Future):
            try:
                result = await outcome
            except RnnstreamError as error:
                failure = error
        if failure is not None:
            reply.update(error_body(failure), code=status_for(failure))
        return reply, result, failure

    async def _binary(self, data: bytes) -> None:
        try:
            header, values = _split_frame(data)
            served = self._served(header.get("model"))
            entries = header.get("requests")
            if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
                raise ProtocolError("the header needs 'requests', a list of objects")
            inputs = _binary_inputs(served, values, len(entries))
            futures: list[asyncio.Future[Any] | Exception] = []
            for entry, x in zip(entries, inputs, strict=True):
                try:
                    futures.append(self._submit(served, _step_request(served, entry, x)))
                except RnnstreamError as error:
                    futures.append(error)
        except RnnstreamError as error:
            await self._send_json({"error": str(error), "code": status_for(error)})
            return
        responses, blobs, counted = [], [], []
        for entry, outcome in zip(entries, futures, strict=True):
            reply, result, failure = await self._outcome(entry, outcome)
            if result is not None:
                parts = result if isinstance(result, list) else [result]
                blobs.append(b"".join(np.asarray(p, "<f4").tobytes() for p in parts))
            responses.append(reply)
            counted.append((served.name, failure))
        self._count(counted)
        head = orjson.dumps({"responses": responses})
        await self._send(data=_LENGTH.pack(len(head)) + head + b"".join(blobs))


def _split_frame(data: bytes) -> tuple[dict[str, Any], bytes]:
    if len(data) < _LENGTH.size:
        raise ProtocolError("a binary frame starts with a 4-byte header length")
    (length,) = _LENGTH.unpack_from(data)
    if _LENGTH.size + length > len(data):
        raise ProtocolError(f"the header length {length} runs past the frame ({len(data)} bytes)")
    try:
        header = orjson.loads(data[_LENGTH.size : _LENGTH.size + length])
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"the binary frame's header is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise ProtocolError("the binary frame's header is a JSON object")
    return header, data[_LENGTH.size + length :]


def _binary_inputs(served: ServedModel, values: bytes, count: int) -> list[Any]:
    """Split the values of a binary frame into each request's inputs (views of the frame, read once)."""
    specs = served.model.inputs
    # One record per request: its inputs in model order, packed (little-endian float32 or int64 ids).
    record = np.dtype([(s.name, "<i8" if s.spec.dtype == "int64" else "<f4", s.spec.shape) for s in specs])
    if len(values) != count * record.itemsize:
        raise ProtocolError(
            f"the frame carries {len(values)} bytes of values; {count} requests need {count * record.itemsize} "
            f"({record.itemsize} each: inputs {[s.name for s in specs]})"
        )
    records = np.frombuffer(values, record)  # (count,)
    columns = {s.name: records[s.name] for s in specs}  # each (count, *shape)
    if len(specs) == 1:  # column[k, ...] is an array even for a token id (a 0-d one), never a scalar
        column = columns[specs[0].name]
        return [column[k, ...] for k in range(count)]
    return [{name: column[k, ...] for name, column in columns.items()} for k in range(count)]


async def stream_socket(websocket: WebSocket) -> None:
    await StreamSocket(websocket, websocket.app.state.server).run()
