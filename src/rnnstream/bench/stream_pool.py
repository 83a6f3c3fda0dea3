"""Stream-steps per second through ``Streams``, by number of concurrent streams and by store, and the
memory store's bytes per stream. Run: ``rnnstream bench streams [MODEL] [--redis URL] [--idle N]``.

Each round steps every stream once in one ``Streams.step`` call (one engine call, one store read and
one store write), so the rate includes the store's cost: for Redis, a pipelined round trip each way.
"""

from __future__ import annotations

import time
import tracemalloc
import uuid
from dataclasses import dataclass
from typing import Any

from rnnstream.bench.context import random_inputs
from rnnstream.errors import StoreError
from rnnstream.model import StreamModel
from rnnstream.streams import Streams

DEFAULT_COUNTS = (1, 100, 1_000, 10_000)


@dataclass(frozen=True)
class Throughput:
    store: str
    streams: int
    steps_per_second: float


def _per_stream_inputs(model: StreamModel, count: int, seed: int) -> list[dict[str, Any]]:
    """Two rounds of inputs, ``{id: x}``, for ``count`` streams."""
    arrays = random_inputs(model, count, 2, seed)
    rounds = []
    for t in range(2):
        parts = [a[:, t] for a in arrays]
        rounds.append({f"s{i}": parts[0][i] if len(parts) == 1 else [p[i] for p in parts] for i in range(count)})
    return rounds


def measure(model: StreamModel, store: str, count: int, seconds: float = 1.5) -> Throughput:
    """Step ``count`` streams together, round after round, for about ``seconds``."""
    streams = Streams(model, store, namespace=f"rnnstream-bench-{uuid.uuid4().hex[:8]}:")
    try:
        rounds = _per_stream_inputs(model, count, seed=count)
        streams.step(rounds[0])  # the streams start: not timed
        done, start = 0, time.perf_counter()
        while True:
            streams.step(rounds[done % 2])
            done += 1
            elapsed = time.perf_counter() - start
            if elapsed >= seconds and done >= 3:
                break
        return Throughput(store.split("://")[0], count, done * count / elapsed)
    finally:
        for stream_id in streams.ids():
            streams.close(stream_id)
        streams.close_store()


@dataclass(frozen=True)
class Footprint:
    streams: int
    bytes_per_stream: float
    state_bytes: int


def memory_footprint(model: StreamModel, count: int, batch: int = 10_000) -> Footprint:
    """Start ``count`` idle streams in a memory store and measure the bytes it holds per stream
    (arena arrays plus the id index, by tracemalloc)."""
    xs = random_inputs(model, batch, 1, seed=0)
    x = [a[:, 0] for a in xs]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    streams = Streams(model, "memory://")
    for start in range(0, count, batch):
        n = min(batch, count - start)
        step = {f"stream-{start + i}": x[0][i] if len(x) == 1 else [p[i] for p in x] for i in range(n)}
        streams.step(step)
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    if len(streams) != count:
        raise StoreError(f"expected {count} streams in the store, found {len(streams)}")
    return Footprint(count, held / count, 4 * model.state_size)


def report(results: list[Throughput], footprint: Footprint | None) -> str:
    lines = [f"{'store':<8} {'streams':>8} {'stream-steps/s':>15}"]
    lines += [f"{r.store:<8} {r.streams:>8,} {r.steps_per_second:>15,.0f}" for r in results]
    if footprint is not None:
        ratio = footprint.bytes_per_stream / footprint.state_bytes
        lines.append(
            f"memory store, {footprint.streams:,} idle streams: {footprint.bytes_per_stream:,.0f} bytes per stream "
            f"for a {footprint.state_bytes:,}-byte state ({ratio:.3f}x)"
        )
    return "\n".join(lines)


def run(
    model: StreamModel, counts: tuple[int, ...], redis_url: str | None, idle: int, seconds: float = 1.5
) -> str:
    """The whole benchmark; Redis is skipped, with a note, when it cannot be reached."""
    stores = ["memory://"] + ([redis_url] if redis_url else [])
    results, notes = [], []
    for store in stores:
        for count in counts:
            try:
                results.append(measure(model, store, count, seconds))
            except StoreError as exc:
                notes.append(f"skipped {store}: {exc}")
                break
    footprint = memory_footprint(model, idle) if idle else None
    return "\n".join([report(results, footprint), *notes])
