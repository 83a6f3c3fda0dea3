"""``rnnstream bench capacity [MODEL]``: the inputs of the capacity model (docs/deployment.md), measured here.

It starts a Redis Cluster of 3 masters with a replica each (``rnnstream.cluster``), then, for plain and
durable acknowledgement (``?replicas=1``), one ``rnnstream serve MODEL`` on it under ``rnnstream.bench.load``
(closed loop over HTTP). It reads the CPU time the server and every Redis node spent, so the figures are
*per core* — stream-steps per CPU-second — and hold on a machine shared with other work, where wall-clock
rates do not. With ``--topology`` it also loads HAProxy in front of 3 replicas, and one of those replicas
alone (wall-clock stream-steps/s, the same machine: on 2 cores they cannot scale; the model says what N
machines give).

The model: N streams at R steps/s each need N·R ÷ (server stream-steps per core) replica cores, and
N·R × (Redis CPU per step) Redis cores; each Redis node runs commands on one thread, so a master gives at
most one core (the model keeps 30% headroom). Every step moves its state row twice over the network
(read and write) between a replica and Redis.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rnnstream.bench.context import random_inputs
from rnnstream.cluster.redis_nodes import RedisNode, RedisShards
from rnnstream.cluster.topology import Replica, Topology
from rnnstream.model import StreamModel

HEADROOM = 0.7
"""The share of a core a Redis master is planned to use at most."""


@dataclass(frozen=True)
class StoreFigures:
    """One server on the Redis Cluster under load: ``durable`` replicas waited for per write."""

    durable: int
    steps_per_second: float  # wall clock, this machine
    p50_ms: float
    p99_ms: float
    server_per_core: float  # stream-steps per CPU-second of the server process
    master_cpu_us: float  # CPU of the Redis masters per stream-step, µs
    replica_cpu_us: float  # and of their replicas


def engine_per_core(model: StreamModel, batch: int = 256, seconds: float = 1.0) -> float:
    """Stream-steps per second of the engine alone, one thread (the model loaded with ``threads=1``)."""
    arrays = [x[:, 0] for x in random_inputs(model, batch, 1)]  # one step: [B, ...] each
    xs = arrays[0] if len(arrays) == 1 else arrays
    state, done, start = model.initial_state(batch), 0, time.perf_counter()
    while time.perf_counter() - start < seconds or done < 3:
        _, state = model.step(xs, state)
        done += 1
    return done * batch / (time.perf_counter() - start)


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used, from /proc (Linux); NaN elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def redis_cpu(nodes: list[RedisNode]) -> float:
    """CPU seconds every node has used (``INFO cpu``, all its threads)."""
    total = 0.0
    for node in nodes:
        info = dict(line.split(":", 1) for line in node.cli("info", "cpu").splitlines() if ":" in line)
        total += float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
    return total


def load(url: str, model: str, streams: int, seconds: float) -> dict[str, float]:
    """``rnnstream.bench.load`` (closed loop, HTTP) against ``url``; its JSON figures."""
    done = subprocess.run([sys.executable, "-m", "rnnstream.bench.load", url, model, "http", str(streams),
                           str(seconds)], capture_output=True, text=True, timeout=seconds * 20 + 120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the load generator failed: {done.stderr[-2000:]}")
    figures: dict[str, float] = json.loads(done.stdout)
    return figures


def measure_store(directory: Path, shards: RedisShards, spec: str, durable: int, streams: int,
                  seconds: float) -> StoreFigures:
    """One server of model ``spec`` (``name=source``) on ``shards`` (writes waiting for ``durable``
    replicas) under load."""
    name = spec.split("=", 1)[0]
    server = Replica(directory, spec, shards.url(durable), ("--threads", "1")).start()
    masters = shards.master_nodes()
    replicas = [node for node in shards.nodes if node not in masters]
    try:
        server.wait_ready()
        assert server.process is not None
        load(server.url, name, streams, 1.0)  # warm up: streams started, connections made
        before = process_cpu(server.process.pid), redis_cpu(masters), redis_cpu(replicas)
        figures = load(server.url, name, streams, seconds)
        after = process_cpu(server.process.pid), redis_cpu(masters), redis_cpu(replicas)
    finally:
        server.signal()
    steps = figures["steps"]
    cpu, master, replica = (b - a for a, b in zip(before, after, strict=True))
    return StoreFigures(durable, figures["steps_per_second"], figures["p50_ms"], figures["p99_ms"],
                        steps / cpu if cpu > 0 else math.nan, master / steps * 1e6, replica / steps * 1e6)


def through_haproxy(directory: Path, spec: str, streams: int, seconds: float) -> tuple[float, float]:
    """Stream-steps/s (wall) through HAProxy in front of 3 replicas, and of one of the replicas alone."""
    name = spec.split("=", 1)[0]
    topology = Topology(directory / "topology", model=spec, durable=1).start()
    try:
        load(topology.url, name, streams, 1.0)
        three = load(topology.url, name, streams, seconds)["steps_per_second"]
        one = load(topology.servers[0].url, name, streams, seconds)["steps_per_second"]
    finally:
        topology.stop()
    return three, one


def report(name: str, model: StreamModel, engine: float, stores: list[StoreFigures],
           haproxy: tuple[float, float] | None, streams: int, rate: float) -> str:
    """The measured inputs, then the model applied to ``streams`` streams at ``rate`` steps/s each."""
    state, output = 4 * model.state_size, 4 * sum(int(np.prod(spec.shape)) for spec in model.output_specs)
    redis_bytes = 2 * (state + output) + 200  # a row and an output read, and written, plus the commands
    lines = [f"{name}: state row {state:,} bytes, output {output:,} bytes; Redis traffic ≈ {redis_bytes:,} bytes "
             "per step (row and output read and written)",
             f"engine alone, 1 thread, batch 256:   {engine:>10,.0f} stream-steps/s per core",
             f"{'acknowledgement':<16} {'steps/s (wall)':>15} {'p50 ms':>7} {'p99 ms':>7} "
             f"{'server steps/core-s':>20} {'Redis µs/step: masters':>23} {'replicas':>9}"]
    for s in stores:
        label = f"replicas={s.durable}" if s.durable else "plain"
        lines.append(f"{label:<16} {s.steps_per_second:>15,.0f} {s.p50_ms:>7.1f} {s.p99_ms:>7.1f} "
                     f"{s.server_per_core:>20,.0f} {s.master_cpu_us:>23.1f} {s.replica_cpu_us:>9.1f}")
    if haproxy is not None:
        lines.append(f"through HAProxy, 3 replicas: {haproxy[0]:,.0f} stream-steps/s; one replica alone: "
                     f"{haproxy[1]:,.0f} (one machine: the replicas share its cores)")
    total = streams * rate
    lines.append(f"\ncapacity for {streams:,} streams at {rate:g} steps/s ({total:,.0f} stream-steps/s):")
    for s in stores:
        masters = max(1, math.ceil(total * s.master_cpu_us / 1e6 / HEADROOM))
        lines.append(f"  {'plain' if not s.durable else f'replicas={s.durable}':<12} replica cores "
                     f"{math.ceil(total / s.server_per_core):>5}, Redis masters {masters:>4} (+ {masters} replicas), "
                     f"network to Redis {total * redis_bytes * 8 / 1e9:,.2f} Gbit/s")
    return "\n".join(lines)


def run(model_spec: str = "seed", streams: int = 200, seconds: float = 3.0, topology: bool = False,
        plan_streams: int = 100_000, plan_rate: float = 1.0) -> str:
    """Measure every input (a Redis Cluster of 6 nodes on free ports, one server at a time) and report."""
    from rnnstream.bench.serve import check_models, served
    from rnnstream.server.config import load_models

    check_models((model_spec,))
    name, spec = served(model_spec)
    (model,) = load_models([spec], threads=1).values()
    engine = engine_per_core(model)
    with tempfile.TemporaryDirectory(prefix="rnnstream-capacity-") as folder:
        directory = Path(folder)
        shards = RedisShards(directory / "redis").start()
        try:
            stores = [measure_store(directory, shards, spec, durable, streams, seconds) for durable in (0, 1)]
        finally:
            shards.stop()
        haproxy = through_haproxy(directory, spec, streams, seconds) if topology else None
    return report(name, model, engine, stores, haproxy, plan_streams, plan_rate)
