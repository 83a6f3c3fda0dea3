"""``rnnstream bench ttft``: time to first token through the server, over Server-Sent Events.

Starts ``rnnstream serve text`` (the bundled Shakespeare model) and, for each client count, opens that many
connections at once, round after round until 20 clients have been timed. Every client POSTs
``/v2/models/text/generate_stream`` with the same prompt, its own seed and temperature 0.8, and reads its
events as they arrive. Per client: time to first token (from sending the request to reading the first
event: parsing, priming the prompt in the shared batched step, sampling, the event's trip back), then the
gaps between its later tokens. Overall: tokens/s (every token of every client ÷ the wall time of the
rounds) and the streams per engine call that the server's metrics saw (all clients share one batched step
per token). The clients are raw keep-alive HTTP/1.1 connections on asyncio, so the load generator costs
little next to the server; both share this machine.
"""

from __future__ import annotations

import asyncio
import json
import re
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass

import numpy as np

from rnnstream.bench.serve import wait_ready
from rnnstream.cluster.redis_nodes import free_port

PROMPT = "ROMEO.\n"


@dataclass(frozen=True)
class ClientTiming:
    first_token: float  # seconds from sending the request to the first event
    gaps: list[float]  # seconds between consecutive later events
    tokens: int


@dataclass(frozen=True)
class RoundResult:
    clients: int
    timings: list[ClientTiming]
    seconds: float  # wall time of the rounds
    streams_per_step: float  # mean streams per token step, from the server's metrics

    @property
    def tokens_per_second(self) -> float:
        return sum(t.tokens for t in self.timings) / self.seconds


async def sse_client(host: str, port: int, path: str, body: bytes) -> ClientTiming:
    """POST ``body`` and read Server-Sent Events over chunked transfer encoding until the last one."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        started = time.perf_counter()
        writer.write(f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"the server answered {head.splitlines()[0]!r}")
        times: list[float] = []
        buffer, done = b"", False
        while not done:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            if size == 0:
                break
            buffer += (await reader.readexactly(size + 2))[:-2]
            now = time.perf_counter()
            *events, buffer = buffer.split(b"\n\n")
            for event in events:
                reply = json.loads(event.removeprefix(b"data: "))
                if "error" in reply:
                    raise RuntimeError(f"the server sent an error: {reply['error']}")
                times.append(now)
                done = reply["finish_reason"] is not None
        first = times[0] - started
        return ClientTiming(first, list(np.diff(times)), len(times))
    finally:
        writer.close()


def _streams_per_step(url: str) -> tuple[float, float]:
    """The server's running totals of streams over token steps: (sum, count)."""
    with urllib.request.urlopen(url + "/metrics", timeout=30) as response:
        text = response.read().decode()
    values = []
    for series in ("rnnstream_generate_streams_sum", "rnnstream_generate_streams_count"):
        found = re.search(series + r'\{model="text"\} (\S+)', text)
        values.append(float(found.group(1)) if found else 0.0)
    return values[0], values[1]


async def _round(url: str, clients: int, tokens: int) -> tuple[list[ClientTiming], float]:
    host, port = url.removeprefix("http://").split(":")
    bodies = [json.dumps({"text_input": PROMPT, "parameters": {"max_tokens": tokens, "temperature": 0.8,
                                                               "seed": k}}).encode() for k in range(clients)]
    started = time.perf_counter()
    timings = await asyncio.gather(*(sse_client(host, int(port), "/v2/models/text/generate_stream", b)
                                     for b in bodies))
    return list(timings), time.perf_counter() - started


def measure(url: str, clients: int, tokens: int, samples: int = 20) -> RoundResult:
    """Rounds of ``clients`` clients at once until there are ``samples`` first tokens (one round of 100
    clients; 20 rounds of one)."""
    before = _streams_per_step(url)
    timings: list[ClientTiming] = []
    seconds = 0.0
    for _ in range(-(-samples // clients)):
        round_timings, round_seconds = asyncio.run(_round(url, clients, tokens))
        timings += round_timings
        seconds += round_seconds
    after = _streams_per_step(url)
    steps = after[1] - before[1]
    return RoundResult(clients, timings, seconds, (after[0] - before[0]) / steps if steps else 0.0)


def report(results: list[RoundResult], tokens: int, threads: int | None = None) -> str:
    header = (f"{'clients':>7}  {'first token p50':>15}  {'p99':>8}  {'per token p50':>13}  {'p99':>8}  "
              f"{'tokens/s':>9}  {'streams/step':>12}")
    engine = f"{threads} engine thread(s)" if threads else "engine threads: every core"
    lines = [f"{tokens} tokens per client after {PROMPT!r}, temperature 0.8, all clients at once (rounds until 20 "
             f"first tokens), over SSE; {engine}", header, "-" * len(header)]
    for r in results:
        first = np.array([t.first_token for t in r.timings]) * 1e3
        gaps = np.concatenate([t.gaps for t in r.timings]) * 1e3
        lines.append(f"{r.clients:>7,}  {np.percentile(first, 50):>12.1f} ms  {np.percentile(first, 99):>5.1f} ms  "
                     f"{statistics.median(gaps):>10.2f} ms  {np.percentile(gaps, 99):>5.1f} ms  "
                     f"{r.tokens_per_second:>9,.0f}  {r.streams_per_step:>12.1f}")
    lines.append("first token: request sent → first event read (parse, prime the prompt in the shared step, sample, "
                 "send); per token: gaps between a client's events; streams/step: the server's mean batch per token")
    return "\n".join(lines)


def run(clients: tuple[int, ...] = (1, 100), tokens: int = 100, threads: int | None = None) -> str:
    """Start a server with the text model (``threads``: its engine threads, default every core), measure
    each client count after a warm-up, return the table."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    options = ["--threads", str(threads)] if threads is not None else []
    server = subprocess.Popen([sys.executable, "-m", "rnnstream", "serve", "text", "--port", str(port),
                               "--grpc-port", "0", *options],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(url, server)
        measure(url, 4, 10, samples=4)  # warm-up: first calls, the event loop's first connections
        results = [measure(url, n, tokens) for n in clients]
    finally:
        server.terminate()
        server.wait(timeout=60)
    return report(results, tokens, threads)
