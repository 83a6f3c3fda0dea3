"""``/v2/stream``: a WebSocket for long-lived streams. One socket carries any number of stream ids.

Text frames are JSON. A request::

    {"model": "seed", "id": "r1", "sequence_id": "sensor-1", "inputs": {"input": [0.1, 0.2, 0.3, 0.4]},
     "sequence_start": true, "sequence_end": false, "sequence_step": 1}

(``inputs`` may be a bare list for a one-input model), or ``{"requests": [...]}`` for several (``model``
may be given once, beside ``requests``). Each request gets ``{"id", "sequence_id", "outputs": {"output":
[...]}}`` or ``{"id", "sequence_id", "error", "code"}`` (several: ``{"responses": [...]}`` in order).
Every message is answered, and errors never close the socket: a malformed request fails alone.

Binary frames are ``uint32 little-endian header length | JSON header | values``: the header is
``{"model", "requests": [{"id", "sequence_id", ...}]}`` and the values are each request's inputs in
model input order (float32, or int64 token ids). The reply has ``{"responses": [...]}`` and the
successful requests' outputs as float32, in order.

History priming (rnnstream.server.priming): a request with ``"steps": T`` carries T steps (JSON: T × a
step's values; binary: T records of its inputs) and steps its stream T times in one engine pass; with
``"sequence_outputs": "all"`` its outputs are every step's, T × a step's values, in step order.

Limits: ``max_ws_requests`` requests in one message (a 400), and ``max_ws_inflight`` messages of one
socket being answered at once: past it the socket is not read until one is answered, so a client that
sends without reading is held back by TCP (backpressure) instead of filling the server's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections import Counter
from collections.abc import MutableMapping
from typing import Any, cast

import msgspec
import numpy as np
import orjson
from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from rnnstream.errors import RnnstreamError
from rnnstream.server import limits
from rnnstream.server.oip import UINT64_MAX, check_id, step_request
from rnnstream.server.priming import all_outputs, history_values
from rnnstream.server.refusals import ProtocolError, error_body, status_for
from rnnstream.server.schema import FrameHeader, FrameSteps, StreamMessage, StreamStep, decode
from rnnstream.server.served import ServedModel, ServerState
from rnnstream.server.tensors import step_values
from rnnstream.step_request import StepRequest

logger = logging.getLogger(__name__)
SERVICE_RESTART = 1012
"""The close code of a server that shuts down (RFC 6455): the client should reconnect elsewhere."""
_LENGTH = struct.Struct("<I")
_INPUTS = msgspec.json.Decoder(dict[str, msgspec.Raw])
_FRAME = msgspec.json.Decoder(FrameSteps)
Outcome = tuple[StreamStep | None, asyncio.Future[Any] | Exception]


class StreamSocket:
    """One connection: requests are queued as they arrive (so each stream keeps its order) and
    answered as their batches finish; at most ``max_ws_inflight`` messages at once."""

    def __init__(self, websocket: WebSocket, state: ServerState) -> None:
        self.websocket, self.state = websocket, state
        self._send_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._inflight = asyncio.Semaphore(state.config.max_ws_inflight)

    async def run(self) -> None:
        await self.websocket.accept()
        code = None
        with contextlib.suppress(WebSocketDisconnect):  # the client hung up: finish what it sent
            while True:
                await self._inflight.acquire()  # not read past the limit: TCP holds the client back
                message = await self.websocket.receive()
                if message["type"] == "websocket.disconnect":
                    code = message.get("code")
                    break
                task = asyncio.get_running_loop().create_task(self._answer(message))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if code == SERVICE_RESTART:  # the server drains (ws_protocol): every message received is answered
            with contextlib.suppress(WebSocketDisconnect, RuntimeError):
                await self.websocket.close(SERVICE_RESTART)

    async def _answer(self, message: MutableMapping[str, Any]) -> None:
        try:
            if message.get("bytes") is not None:
                await self._binary(message["bytes"])
            elif message.get("text") is not None:
                await self._text(message["text"])
        except Exception as error:  # a bug: logged, and the message is still answered
            logger.exception("the WebSocket endpoint failed on a message")
            await self._send_json({**error_body(error), "code": status_for(error)})
        finally:
            self._inflight.release()

    async def _send(self, text: str | None = None, data: bytes | None = None) -> None:
        async with self._send_lock:
            with contextlib.suppress(WebSocketDisconnect, RuntimeError):  # the client left: nowhere to send
                if data is not None:
                    await self.websocket.send_bytes(data)
                else:
                    await self.websocket.send_text(text or "")

    async def _send_json(self, message: Any) -> None:
        await self._send(orjson.dumps(message).decode())

    def _served(self, name: str | None) -> ServedModel:
        if name is None:
            raise ProtocolError("'model' is required: the name of a served model")
        return self.state.find(name)

    def _count(self, outcomes: list[tuple[str, Exception | None]]) -> None:
        """Count one message's requests: ``(model name, error or None)`` each, one increment per label set."""
        metrics = self.state.metrics
        codes = Counter((metrics.label(model), "200" if error is None else str(status_for(error)))
                        for model, error in outcomes)
        for (model, code), n in codes.items():
            metrics.requests.inc(n, model=model, protocol="websocket", code=code)
        for model, error in outcomes:
            if error is not None:
                metrics.errors.inc(model=metrics.label(model), error=type(error).__name__)

    def _request(self, step: StreamStep, x: Any) -> StepRequest:
        if isinstance(step.id, str):
            check_id(step.id, "id", self.state.config)
        if step.steps is None and step.sequence_outputs == "last":  # one step, as almost every request is
            return step_request(step.sequence_id, step.sequence_start, step.sequence_end, step.sequence_step, x,
                                self.state.config)
        return step_request(step.sequence_id, step.sequence_start, step.sequence_end, step.sequence_step, x,
                            self.state.config, steps=step.steps,
                            all_outputs=all_outputs(step.sequence_outputs, step.steps, "sequence_outputs"))

    def _check_count(self, requests: int) -> None:
        """One message's requests within ``max_ws_requests``."""
        limits.check("max_ws_requests", requests, self.state.config.max_ws_requests)

    # -- text: JSON ----------------------------------------------------------------------------------

    async def _text(self, text: str) -> None:
        try:
            message = decode(StreamMessage, text) if '"requests"' in text else StreamMessage()
            entries = message.requests
            if entries is not None:
                self._check_count(len(entries))
        except RnnstreamError as error:
            await self._send_json({**error_body(error), "code": status_for(error)})
            return
        outcomes: list[tuple[str, Outcome]] = []
        for k, raw in enumerate(entries if entries is not None else [msgspec.Raw(text.encode())]):
            step: StreamStep | None = None
            model = message.model or ""
            try:
                step = decode(StreamStep, raw)
                model = step.model or model
                served = self._served(step.model or message.model)
                where = f"$.requests[{k}].inputs" if entries is not None else "$.inputs"
                request = self._request(step, self._inputs(served, step, where))
                outcomes.append((model, (step, self.state.enqueue(served, request))))
            except RnnstreamError as error:
                outcomes.append((model, (step, error)))
        responses, counted = [], []
        for model, outcome in outcomes:
            reply, result, failure = await _settle(*outcome)
            if result is not None:
                outputs = self.state.models[model].outputs_by_name(result)
                reply["outputs"] = {k: np.asarray(v).reshape(-1).tolist() for k, v in outputs.items()}
            responses.append(reply)
            counted.append((model, failure))
        self._count(counted)
        await self._send_json(responses[0] if entries is None else {"responses": responses})

    def _inputs(self, served: ServedModel, step: StreamStep, where: str) -> Any:
        """A request's ``inputs`` (a list for a one-input model, or by input name) as one step of each input."""
        specs = served.model.inputs
        if isinstance(step.inputs, msgspec.UnsetType):
            raise ProtocolError(f"{where} is required: the step's values")
        if step.steps is not None:
            limits.check("max_prime_steps", step.steps, self.state.config.max_prime_steps)
        T = step.steps
        raw = bytes(step.inputs).lstrip()
        if raw.startswith(b"{"):
            try:
                given = _INPUTS.decode(raw)
            except msgspec.ValidationError as error:
                raise ProtocolError(f"{where}: {error}") from None
            if sorted(given) != sorted(s.name for s in specs):
                raise ProtocolError(f"{where} must give every model input {[s.name for s in specs]}, "
                                    f"got {sorted(given)}")
            arrays = {s.name: step_values(given[s.name], s, f"{where}.{s.name}") if T is None else
                      history_values(given[s.name], s, T, f"{where}.{s.name}") for s in specs}
            return arrays[specs[0].name] if len(specs) == 1 else arrays
        if len(specs) != 1:
            raise ProtocolError(f"{where}: this model has inputs {[s.name for s in specs]}: give them by name")
        return step_values(msgspec.Raw(raw), specs[0], where) if T is None else \
            history_values(msgspec.Raw(raw), specs[0], T, where)

    # -- binary frames --------------------------------------------------------------------------------

    async def _binary(self, data: bytes) -> None:
        try:
            steps, values = _split_frame(data)
            served = self._served(steps.model)
            self._check_count(len(steps.requests))
            entries = [entry if isinstance(entry, StreamStep) else _decoded(entry)
                       for entry in cast(list[StreamStep | msgspec.Raw], steps.requests)]
            inputs = _binary_inputs(served, values, [e.steps if isinstance(e, StreamStep) else None for e in entries])
        except RnnstreamError as error:
            await self._send_json({**error_body(error), "code": status_for(error)})
            return
        outcomes: list[Outcome] = []
        for entry, x in zip(entries, inputs, strict=True):
            step = entry if isinstance(entry, StreamStep) else None
            try:
                if not isinstance(entry, StreamStep):
                    raise entry
                if entry.steps is not None:
                    limits.check("max_prime_steps", entry.steps, self.state.config.max_prime_steps)
                outcomes.append((step, self.state.enqueue(served, self._request(entry, x))))
            except RnnstreamError as error:
                outcomes.append((step, error))
        responses, blobs, counted = [], [], []
        for outcome in outcomes:
            reply, result, failure = await _settle(*outcome)
            if result is not None:
                parts = result if isinstance(result, list) else [result]
                blobs.append(b"".join(np.asarray(p, "<f4").tobytes() for p in parts))
            responses.append(reply)
            counted.append((served.name, failure))
        self._count(counted)
        head = orjson.dumps({"responses": responses})
        await self._send(data=_LENGTH.pack(len(head)) + head + b"".join(blobs))


async def _settle(
    step: StreamStep | None, outcome: asyncio.Future[Any] | Exception
) -> tuple[dict[str, Any], Any, Exception | None]:
    """The reply head of one request, its result (None if it failed) and its error (in the reply too)."""
    reply: dict[str, Any] = {"id": step.id, "sequence_id": step.sequence_id} if step else \
        {"id": None, "sequence_id": None}
    failure: Exception | None = outcome if isinstance(outcome, Exception) else None
    result = None
    if isinstance(outcome, asyncio.Future):
        try:
            result = await outcome
        except RnnstreamError as error:
            failure = error
    if failure is not None:
        reply.update(error_body(failure), code=status_for(failure), sequence_id=_echo(reply["sequence_id"]))
    return reply, result, failure


def _echo(value: int | str | None) -> int | str | None:
    """A refused sequence id as its reply echoes it: an integer beyond 64 bits as its digits (JSON encoders
    refuse it; an accepted id is never one)."""
    return str(value) if isinstance(value, int) and value > UINT64_MAX else value


def _split_frame(data: bytes) -> tuple[FrameSteps | FrameHeader, bytes]:
    """The header and the values of a binary frame; a header whose requests all decode is decoded in one call."""
    if len(data) < _LENGTH.size:
        raise ProtocolError("a binary frame starts with a 4-byte header length")
    (length,) = _LENGTH.unpack_from(data)
    if _LENGTH.size + length > len(data):
        raise ProtocolError(f"the header length {length} runs past the frame ({len(data)} bytes)")
    head, values = data[_LENGTH.size : _LENGTH.size + length], data[_LENGTH.size + length :]
    try:
        return _FRAME.decode(head), values
    except msgspec.ValidationError:  # a malformed request, or header: found one request at a time
        return decode(FrameHeader, head), values
    except msgspec.DecodeError as error:
        raise ProtocolError(f"the frame's header is not valid JSON: {error}") from None


def _decoded(entry: msgspec.Raw) -> StreamStep | RnnstreamError:
    """A request of a frame header that did not decode with the others: decoded alone, or its error."""
    try:
        return decode(StreamStep, bytes(entry))
    except RnnstreamError as error:
        return error


def _binary_inputs(served: ServedModel, values: bytes, steps: list[int | None]) -> list[Any]:
    """Split the values of a binary frame into each request's inputs (views of the frame, read once); a
    request of ``steps[k]`` = T steps has T records, ``[T, *shape]`` each input (None: one record)."""
    specs = served.model.inputs
    # One record per step: its inputs in model order, packed (little-endian float32 or int64 ids).
    record = np.dtype([(s.name, "<i8" if s.spec.dtype == "int64" else "<f4", s.spec.shape) for s in specs])
    count = sum(1 if T is None else T for T in steps)
    if len(values) != count * record.itemsize:
        raise ProtocolError(
            f"the frame carries {len(values)} bytes of values; its {len(steps)} requests of {count} steps in all "
            f"need {count * record.itemsize} ({record.itemsize} a step: inputs {[s.name for s in specs]})"
        )
    records = np.frombuffer(values, record)  # (count,)
    columns = {s.name: records[s.name] for s in specs}  # each (count, *shape)
    if count == len(steps) and all(T is None for T in steps):  # one step each, the usual frame
        if len(specs) == 1:  # column[k, ...] is an array even for a token id (a 0-d one), never a scalar
            column = columns[specs[0].name]
            return [column[k, ...] for k in range(count)]
        return [{name: column[k, ...] for name, column in columns.items()} for k in range(count)]
    inputs, at = [], 0
    for T in steps:
        span = slice(at, at + (1 if T is None else T))
        at = span.stop
        parts = {name: column[at - 1, ...] if T is None else column[span] for name, column in columns.items()}
        inputs.append(parts[specs[0].name] if len(specs) == 1 else parts)
    return inputs


async def stream_socket(websocket: WebSocket) -> None:
    await StreamSocket(websocket, websocket.app.state.server).run()


def routes() -> list[BaseRoute]:
    """``/v2/stream``."""
    return [WebSocketRoute("/v2/stream", stream_socket)]
