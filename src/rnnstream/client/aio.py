"""The asyncio client: :class:`AsyncClient` and its streams, exactly-once over WebSocket or HTTP.

A stream numbers its steps itself (``sequence_step``) and sends one request at a time; a request is resent,
unchanged, after a lost connection or a retryable refusal until it is answered (``RetryPolicy``), so no step is
ever lost or applied twice, even across server restarts on a shared store.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

import numpy as np

from rnnstream.client.outcomes import ClientTimeoutError, ServerError
from rnnstream.client.retry import ClientStats, RetryPolicy, answered, send_with_retries
from rnnstream.client.wire import Call, ModelInfo, as_inputs
from rnnstream.errors import RnnstreamError
from rnnstream.types import FloatArray, Outputs

if TYPE_CHECKING:
    from rnnstream.client.http_transport import HttpTransport
    from rnnstream.client.ws_transport import WebSocketTransport

Transport = Literal["websocket", "http"]
TRANSPORTS = ("websocket", "http")


class AsyncClient:
    """A client of ``rnnstream serve`` at ``url``: ``transport`` ``"websocket"`` (every stream on one socket, in
    binary frames) or ``"http"`` (Open Inference Protocol requests); ``token`` for a server run with ``--token``;
    ``retry`` bounds each request's retries (60 s in all by default).

    Use it as ``async with AsyncClient(url) as client:``, then ``client.stream(model, id)``.
    """

    def __init__(self, url: str = "http://127.0.0.1:8000", *, transport: Transport = "websocket",
                 token: str | None = None, retry: RetryPolicy | None = None) -> None:
        if transport not in TRANSPORTS:
            raise RnnstreamError(f"transport {transport!r} is not one the client speaks: {list(TRANSPORTS)}")
        self.url, self.transport = url, transport
        self.retry = retry or RetryPolicy()
        self.stats = ClientStats()
        self.priming: bool | None = None
        """Whether the server steps a request with a time axis at once (None until a ``steps`` call finds out)."""
        self.max_prime_steps: int | None = None
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http: HttpTransport | None = None
        self._ws: WebSocketTransport | None = None
        self._models: dict[str, ModelInfo] = {}

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def stream(self, model: str, sequence_id: str | int, *, next_step: int = 1) -> AsyncStream:
        """Stream ``sequence_id`` of ``model``. Its first request starts it when ``next_step`` is 1; give the step
        number it takes next to go on with a stream begun earlier (``StepOrderError.expected`` says it)."""
        return AsyncStream(self, model, str(sequence_id), next_step)

    async def model(self, name: str) -> ModelInfo:
        """``name``'s inputs and outputs, read from the server once (retried as requests are)."""
        if name not in self._models:
            path = f"/v2/models/{quote(name, safe='')}"
            answer = await answered(lambda: self._https().get(path), f"model {name!r}", self.retry, self.stats)
            if answer.outputs is None:
                raise ServerError(f"model {name!r}: {answer.body.get('error')} ({answer.status})",
                                  status=answer.status, body=answer.body)
            self._models[name] = ModelInfo.from_metadata(answer.body)
        return self._models[name]

    async def send(self, call: Call) -> list[FloatArray]:
        """``call``'s outputs, with retries; a request with a time axis goes over HTTP (its shape says T)."""
        if call.primed or self.transport == "http":
            return await send_with_retries(self._https().send, call, self.retry, self.stats)
        return await send_with_retries(self._sockets().send, call, self.retry, self.stats)

    async def aclose(self) -> None:
        """Close the socket and the connections."""
        if self._ws is not None:
            await self._ws.aclose()
        if self._http is not None:
            await self._http.aclose()

    def _https(self) -> HttpTransport:
        if self._http is None:
            from rnnstream.client.http_transport import HttpTransport  # httpx only once a client runs

            self._http = HttpTransport(self.url, self._headers)
        return self._http

    def _sockets(self) -> WebSocketTransport:
        if self._ws is None:
            from rnnstream.client.ws_transport import WebSocketTransport  # websockets only once a client runs

            self._ws = WebSocketTransport(self.url, self._headers, self.stats)
        return self._ws


class AsyncStream:
    """One stream of a model on a server: ``step(x)``, ``steps(xs)`` (history priming), ``end(x)``.

    ``next_step`` is the number of its next step. One request at a time: concurrent calls on one stream wait
    their turn. ``pending``: a request whose fate a timeout left unknown, resent before the next one.
    """

    def __init__(self, client: AsyncClient, model: str, sequence_id: str, next_step: int) -> None:
        self.client, self.model, self.sequence_id = client, model, sequence_id
        self.next_step = next_step
        self.pending: Call | None = None
        self._turn = asyncio.Lock()

    def __repr__(self) -> str:
        return f"AsyncStream({self.model!r}, {self.sequence_id!r}, next_step={self.next_step})"

    async def step(self, x: Any, *, end: bool = False) -> Outputs:
        """One step: ``x`` without batch or time axis (a list or a dict by name for several inputs); returns the
        step's outputs (one array per output; a list of them for several). ``end`` ends the stream with it."""
        info = await self.client.model(self.model)
        inputs = as_inputs(info, x, None)
        async with self._turn:
            await self._settle()
            return _outputs(await self._send(self._call(info, inputs, end=end)))

    async def end(self, x: Any) -> Outputs:
        """The stream's last step: ``step(x, end=True)``; the server forgets the stream after it."""
        return await self.step(x, end=True)

    async def steps(self, xs: Any, *, end: bool = False) -> Outputs:
        """T steps at once: ``xs`` with a time axis first (``(T, *shape)`` per input); returns every step's outputs,
        ``(T, *shape)`` each. One request steps them all (history priming) where the server does it; a server
        that refuses the time axis gets T single steps."""
        info = await self.client.model(self.model)
        inputs = as_inputs(info, xs, _length(info, xs))
        T = len(inputs[0])
        async with self._turn:
            await self._settle()
            if T > 1 and self.client.priming is not False:
                primed = await self._primed(info, inputs, end)
                if primed is not None:
                    return _outputs(primed)
            found = [await self._send(self._call(info, [x[t : t + 1] for x in inputs], end=end and t == T - 1))
                     for t in range(T)]
            if T > 1:
                self.client.priming = False  # it refused a time axis, and took the same steps one by one
            return _outputs([np.stack([f[k] for f in found]) for k in range(len(info.outputs))])

    async def retry(self) -> Outputs | None:
        """Resend the request a timeout left unknown (``pending``) and return its outputs; None if there is none."""
        async with self._turn:
            if self.pending is None:
                return None
            return _outputs(await self._send(self.pending))

    async def _primed(self, info: ModelInfo, inputs: list[Any], end: bool) -> list[FloatArray] | None:
        """The outputs of T steps sent with a time axis, in requests of at most the server's ``max_prime_steps``;
        None when the server refuses a time axis (400), before it stepped anything."""
        T, done, found = len(inputs[0]), 0, []
        while done < T:
            size = min(T - done, self.client.max_prime_steps or T)
            call = self._call(info, [x[done : done + size] for x in inputs], end=end and done + size == T,
                              primed=True)
            try:
                found.append(await self._send(call))
            except ServerError as error:
                limit = error.body.get("limit")
                if isinstance(limit, dict) and limit.get("name") == "max_prime_steps" and limit["limit"] < size:
                    self.client.max_prime_steps = max(1, int(limit["limit"]))  # nothing applied: again, in parts
                    continue
                if error.status == 400 and self.client.priming is None and done == 0:
                    return None
                raise
            self.client.priming = True
            done += size
        return [np.concatenate([f[k] for f in found]) for k in range(len(info.outputs))]

    def _call(self, info: ModelInfo, inputs: list[Any], *, end: bool, primed: bool = False) -> Call:
        return Call(info, self.sequence_id, self.next_step, inputs, start=self.next_step == 1, end=end, primed=primed)

    async def _send(self, call: Call) -> list[FloatArray]:
        try:
            outputs = await self.client.send(call)
        except ClientTimeoutError as error:
            self.pending = call if error.unknown else None
            raise
        self.pending = None
        self.next_step = call.step + call.steps
        return outputs

    async def _settle(self) -> None:
        """Resend a request a timeout left unknown: applied once, whatever became of it, before the next."""
        if self.pending is not None:
            await self._send(self.pending)


def _outputs(found: list[FloatArray]) -> Outputs:
    """One array for a one-output model, else a list in output order (as ``Streams.step`` returns them)."""
    return found[0] if len(found) == 1 else found


def _length(info: ModelInfo, xs: Any) -> int:
    """T: the length of the time axis of ``xs`` (of its first input)."""
    first = next(iter(xs.values()), []) if isinstance(xs, dict) else xs if len(info.inputs) == 1 else xs[0]
    return len(np.asarray(first))
