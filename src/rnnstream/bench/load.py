"""A load generator for ``rnnstream bench serve``, run in its own process:
``python -m rnnstream.bench.load URL MODEL {http,websocket,grpc} STREAMS SECONDS [RATE]``; prints JSON
(for grpc, URL is the gRPC address, ``host:port``).

Closed loop (no RATE): each stream sends its next step when the previous one has answered, so the
number of requests in flight is the number of streams and the latency is, by Little's law, at
least streams ÷ throughput: this measures the most the server can do. Open loop (RATE steps per
second per stream): steps are sent on a fixed schedule, whether or not earlier ones have answered,
and each latency counts from the step's scheduled time, so a server that falls behind shows it
(no coordinated omission): this measures the latency streams see at that load.

Over HTTP, every stream has its own keep-alive connection. Over WebSocket, streams share sockets
(100 per socket); a socket sends one binary frame with a step for each of its streams. Over gRPC, streams
share ``ModelStreamInfer`` calls (20 per call; rnnstream.bench.grpc_load). The first step of every stream
(``sequence_start``) is not timed.
"""

from __future__ import annotations

import asyncio
import json
import struct
import sys
import time
from collections.abc import Coroutine, Iterator
from typing import Any, Protocol, TypeVar, cast

import numpy as np

from rnnstream.bench.grpc_load import grpc_load

PER_SOCKET = 100
T = TypeVar("T")


def _summary(latencies: list[float], steps: int, seconds: float) -> dict[str, float]:
    lat = np.array(latencies) * 1000
    return {"steps": steps, "seconds": seconds, "steps_per_second": steps / seconds,
            "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99))}


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection, one request at a time, its replies parsed by hand: the load
    generator shares the machine with the server (on these 2-core machines the two cores slow each other
    down like hyperthreads), so every microsecond it spends per request is taken from the server."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.reply: asyncio.Future[bytes] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not asyncio.Transport subclasses

    def connection_lost(self, exc: Exception | None) -> None:
        if self.reply is not None and not self.reply.done():
            self.reply.set_exception(ConnectionError(f"the server closed the connection ({exc})"))

    def post(self, request: bytes) -> asyncio.Future[bytes]:
        """Send a whole request (``http_request``); the future gets the reply's body."""
        assert self.transport is not None
        self.reply = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return self.reply

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end]).lower()
        length = _content_length(head)
        if len(self.buffer) < end + 4 + length:
            return
        content = bytes(self.buffer[end + 4 : end + 4 + length])
        del self.buffer[: end + 4 + length]
        reply, self.reply = self.reply, None
        if reply is None or reply.done():
            return
        status = int(head[9:12])
        if status != 200:
            reply.set_exception(RuntimeError(f"HTTP {status}: {content[:300]!r}"))
        else:
            reply.set_result(content)


def http_request(host: str, path: str, body: bytes) -> bytes:
    """A POST with a JSON body, as bytes ready to send (made once per stream and reused).

    >>> http_request("h", "/p", b"{}")
    b'POST /p HTTP/1.1\\r\\nHost: h\\r\\nContent-Type: application/json\\r\\nContent-Length: 2\\r\\n\\r\\n{}'
    """
    head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
    return f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body


def _content_length(head: bytes) -> int:
    """The content length a lower-cased response head gives, 0 if none.

    >>> _content_length(b"http/1.1 200 ok\\r\\ncontent-length: 12\\r\\nserver: x"), _content_length(b"http/1.1 204")
    (12, 0)
    """
    at = head.find(b"content-length:")
    if at < 0:
        return 0
    stop = head.find(b"\r\n", at)
    return int(head[at + len(b"content-length:") : stop if stop >= 0 else len(head)])


async def http_load(
    url: str, model: str, features: int, streams: int, seconds: float, rate: float, input_name: str = "input"
) -> dict[str, float]:
    host, port = url.removeprefix("http://").split(":")
    path = f"/v2/models/{model}/infer"
    x = [0.1] * features
    latencies: list[float] = []

    def request(k: int, start: bool) -> bytes:
        body = json.dumps({"inputs": [{"name": input_name, "shape": [1, features], "datatype": "FP32", "data": x}],
                           "parameters": {"sequence_id": f"load-{k}", "sequence_start": start}}).encode()
        return http_request(host, path, body)

    loop = asyncio.get_running_loop()
    connections = [(await loop.create_connection(_Connection, host, int(port)))[1] for _ in range(streams)]
    await asyncio.gather(*(c.post(request(k, True)) for k, c in enumerate(connections)))
    started = time.perf_counter()
    end = started + seconds

    async def drive(k: int) -> None:
        step = request(k, False)
        for due in _schedule(started, end, rate, k / streams):
            await _until(due)
            began = due if rate else time.perf_counter()
            await connections[k].post(step)
            latencies.append(time.perf_counter() - began)

    await asyncio.gather(*(drive(k) for k in range(streams)))
    elapsed = time.perf_counter() - started
    for connection in connections:
        if connection.transport is not None:
            connection.transport.close()
    return _summary(latencies, len(latencies), elapsed)


async def websocket_load(
    url: str, model: str, features: int, streams: int, seconds: float, rate: float
) -> dict[str, float]:
    import websockets

    latencies: list[float] = []
    values = np.full((PER_SOCKET, features), 0.1, np.float32)
    end_holder: list[float] = []

    async def socket_loop(first: int, count: int) -> None:
        async with websockets.connect(url.replace("http", "ws", 1) + "/v2/stream", max_size=None) as socket:
            shared = _SharedSocket(socket, model, first, values[:count], latencies)
            await shared.start()
            while not end_holder:
                await asyncio.sleep(0.001)
            if not rate:
                await shared.closed_loop(end_holder[0])
            else:
                await shared.open_loop(_schedule(end_holder[0] - seconds, end_holder[0], rate, first / streams))

    tasks = [asyncio.ensure_future(socket_loop(first, min(PER_SOCKET, streams - first)))
             for first in range(0, streams, PER_SOCKET)]
    await asyncio.sleep(2.0)  # every socket connects and starts its streams
    started = time.perf_counter()
    end_holder.append(started + seconds)
    await asyncio.gather(*tasks)
    return _summary(latencies, len(latencies), time.perf_counter() - started)


class _Socket(Protocol):
    """What the load generator uses of a websockets client connection."""

    async def send(self, message: bytes) -> None: ...

    async def recv(self) -> str | bytes: ...


class _SharedSocket:
    """Streams ``first`` … ``first + len(values) - 1`` on one WebSocket: each frame carries a step of every
    one of them (``values (count, F)``), and each answered frame adds a latency per stream to ``latencies``."""

    def __init__(self, socket: _Socket, model: str, first: int, values: np.ndarray[Any, Any],
                 latencies: list[float]) -> None:  # fmt: skip
        self.socket, self.model, self.first, self.values = socket, model, first, values
        self.count = len(values)
        self.latencies = latencies

    def frame(self, start: bool) -> bytes:
        """One binary frame: the length of a JSON head, the head (a request per stream), then the values."""
        requests = [{"sequence_id": f"load-{self.first + i}", "sequence_start": start} for i in range(self.count)]
        head = json.dumps({"model": self.model, "requests": requests}).encode()
        return struct.pack("<I", len(head)) + head + self.values.tobytes()

    async def answer(self) -> None:
        """Wait for the next reply; raise if it is text or answers any stream with an error."""
        reply = await self.socket.recv()
        if not isinstance(reply, bytes):
            raise RuntimeError(f"the server answered text: {reply[:300]}")
        (length,) = struct.unpack_from("<I", reply)
        if any("error" in r for r in json.loads(reply[4 : 4 + length])["responses"]):
            raise RuntimeError(f"the server answered errors: {reply[4 : 4 + length][:300]!r}")

    async def start(self) -> None:
        """Start every stream (not timed)."""
        await self.socket.send(self.frame(True))
        await self.answer()

    async def closed_loop(self, end: float) -> None:
        """Send the next frame when the previous one has answered, until ``end``."""
        step = self.frame(False)
        while time.perf_counter() < end:
            began = time.perf_counter()
            await self.socket.send(step)
            await self.answer()
            self.latencies.extend([time.perf_counter() - began] * self.count)

    async def open_loop(self, schedule: Iterator[float]) -> None:
        """Send a frame at each time of ``schedule``, answered or not; latencies count from those times."""
        # Open loop: frames go out on schedule; replies come back in order (a stream's steps keep
        # their order, and every frame of this socket carries the same streams).
        step = self.frame(False)
        sent: asyncio.Queue[float] = asyncio.Queue()
        receiver = asyncio.ensure_future(self._receive(sent))
        for due in schedule:
            await _until(due)
            await self.socket.send(step)
            sent.put_nowait(due)
        sent.put_nowait(-1.0)
        await receiver

    async def _receive(self, sent: asyncio.Queue[float]) -> None:
        """Take the answers of the frames sent at the times put in ``sent``, in order, until a negative one."""
        while True:
            due = await sent.get()
            if due < 0:
                return
            await self.answer()
            self.latencies.extend([time.perf_counter() - due] * self.count)


def _schedule(started: float, end: float, rate: float, phase: float) -> Iterator[float]:
    """When to send: as soon as possible until ``end`` (closed loop, ``rate`` 0), or every
    ``1 / rate`` seconds, offset by ``phase`` of a period so that streams do not send in lockstep."""
    if not rate:
        while time.perf_counter() < end:
            yield time.perf_counter()
        return
    n = 0
    while (due := started + (phase + n) / rate) < end:
        yield due
        n += 1


async def _until(due: float) -> None:
    delay = due - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)


def main(argv: list[str]) -> int:
    url, model, protocol, streams, seconds, *rest = argv
    rate = float(rest[0]) if rest else 0.0
    if protocol == "grpc":
        latencies, elapsed = _run(grpc_load(url, model, int(streams), float(seconds), rate, _schedule))
        print(json.dumps(_summary(latencies, len(latencies), elapsed)))
        return 0
    tensor = json.loads(_get(url + f"/v2/models/{model}"))["inputs"][0]  # the model's one (B, F) input
    features = int(tensor["shape"][1])
    load = (http_load(url, model, features, int(streams), float(seconds), rate, tensor["name"]) if protocol == "http"
            else websocket_load(url, model, features, int(streams), float(seconds), rate))
    result: dict[str, Any] = _run(load)
    print(json.dumps(result))
    return 0


def _run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on uvloop when it is installed (it comes with the server extra): the load generator
    shares the machine with the server, and every microsecond it spends per request is the server's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def _get(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=30) as response:
        return str(response.read().decode())


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
