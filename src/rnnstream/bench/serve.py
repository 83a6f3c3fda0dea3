"""``rnnstream bench serve``: a server process and a load-generator process on loopback.

For each model (``identity``: the server's own ceiling; ``seed``; ``large``: 2 × LSTM(512) over 128
features; or any model ``rnnstream serve`` takes, ``FILE`` or ``NAME=FILE``, with one real-valued input
``(B, F)``), protocol (HTTP, WebSocket, gRPC streaming) and batching (on: max batch 1,024 and 2 ms delay;
off: one step per engine call), it starts ``rnnstream serve`` and drives 1,000 concurrent streams from
``rnnstream.bench.load`` for a few seconds in a closed loop (the most the server can do), then, with
batching on, in an open loop where every stream sends ``rate`` steps per second (the latency streams
see at that load); it reports throughput and p50/p99 latency.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass

from rnnstream.cluster.redis_nodes import free_port
from rnnstream.errors import InputError
from rnnstream.server.config import load_models, model_spec

MODELS = {"identity": "builtin:identity", "seed": "seed", "large": "builtin:large"}
"""The benchmark's own models by name (the default set); any other name is a model spec of ``rnnstream serve``."""
BATCHING = {"on": ["--max-batch", "1024", "--max-delay-ms", "2"], "off": ["--max-batch", "1", "--max-delay-ms", "0"]}


@dataclass(frozen=True)
class LoadResult:
    model: str
    protocol: str
    batching: str
    steps_per_second: float
    p50_ms: float
    p99_ms: float
    rate: float = 0.0  # steps per second per stream in the open loop; 0 = closed loop

    @property
    def load(self) -> str:
        return f"{self.rate:g}/s each" if self.rate else "closed"


def served(model: str) -> tuple[str, str]:
    """The name ``model`` is served under and the ``rnnstream serve`` argument that serves it.

    >>> served("seed"), served("runs/my_model.keras"), served("mine=runs/a.onnx")
    (('seed', 'seed=seed'), ('my_model', 'my_model=runs/my_model.keras'), ('mine', 'mine=runs/a.onnx'))
    """
    if model in MODELS:
        return model, f"{model}={MODELS[model]}"
    name, source = model_spec(model)
    return name, f"{name}={source}"


def check_models(models: tuple[str, ...]) -> None:
    """Refuse, before any server starts, a model that does not load, two models served under one name, or a
    model the load generator cannot drive (it sends one real-valued input ``(B, F)`` per step)."""
    names = [served(model)[0] for model in models]
    if len(set(names)) != len(names):
        raise InputError(f"models {list(models)} are served as {names}: two share a name; name them NAME=FILE")
    for name, model in zip(names, load_models([served(m)[1] for m in models], threads=1).values(), strict=True):
        inputs = model.inputs
        if len(inputs) != 1 or inputs[0].spec.dtype != "float32" or len(inputs[0].spec.shape) != 1:
            described = ", ".join(f"{s.name} {s.spec.describe()}" for s in inputs)
            raise InputError(f"bench serve sends each stream one real-valued input (B, F) per step; model {name!r} "
                             f"has {described}. Benchmark it with bench context or bench streams")


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    """Return once the server ``process`` at ``url`` answers its readiness check; raise if it exits or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the server exited before it was ready")
        try:
            with urllib.request.urlopen(url + "/v2/health/ready", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"the server at {url} was not ready within {timeout} s")


def measure(model: str, protocol: str, batching: str, streams: int, seconds: float, rate: float = 0.0, *,
            grpc_flag: bool = True) -> LoadResult:
    """One run: a server and the load generator. The server listens for gRPC only when the load is gRPC;
    ``grpc_flag`` False: it does not take ``--grpc-port`` at all (a release older than gRPC, in an A/B)."""
    port, grpc_port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    grpc = ["--grpc-port", str(grpc_port if protocol == "grpc" else 0)] if grpc_flag else []
    name, spec = served(model)
    server = subprocess.Popen(
        [sys.executable, "-m", "rnnstream", "serve", spec, "--port", str(port), *grpc, *BATCHING[batching]],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_ready(url, server)
        target = f"127.0.0.1:{grpc_port}" if protocol == "grpc" else url
        load = subprocess.run(
            [sys.executable, "-m", "rnnstream.bench.load", target, name, protocol, str(streams), str(seconds),
             str(rate)],
            capture_output=True, text=True, timeout=seconds * 20 + 120,
        )
        if load.returncode != 0:
            raise RuntimeError(f"the load generator failed: {load.stderr[-2000:]}")
        result = json.loads(load.stdout)
    finally:
        server.terminate()
        server.wait(timeout=60)
    return LoadResult(name, protocol, batching, result["steps_per_second"], result["p50_ms"], result["p99_ms"],
                      rate)


def report(results: list[LoadResult]) -> str:
    lines = [f"{'model':<9} {'protocol':<10} {'batching':<9} {'load':<12} {'stream-steps/s':>15} {'p50 ms':>8} "
             f"{'p99 ms':>8}"]
    lines += [f"{r.model:<9} {r.protocol:<10} {r.batching:<9} {r.load:<12} {r.steps_per_second:>15,.0f} "
              f"{r.p50_ms:>8.1f} {r.p99_ms:>8.1f}" for r in results]
    closed = {(r.model, r.protocol, r.batching): r.steps_per_second for r in results if not r.rate}
    for protocol in ("http", "websocket", "grpc"):
        seed, identity = closed.get(("seed", protocol, "on")), closed.get(("identity", protocol, "on"))
        on, off = closed.get(("large", protocol, "on")), closed.get(("large", protocol, "off"))
        if seed and identity:
            lines.append(f"{protocol}: seed / identity throughput = {seed / identity:.2f} (goal >= 0.80)")
        if on and off:
            lines.append(f"{protocol}: large model, batching on / off = {on / off:.1f}x (goal >= 5x)")
        for r in results:
            if r.protocol == protocol and r.batching == "on":
                load = (f"open loop, {r.rate:g} steps/s per stream ({r.steps_per_second:,.0f} in all)" if r.rate
                        else f"closed loop ({r.steps_per_second:,.0f} steps/s)")
                lines.append(f"{protocol}: {r.model}, {load}: p99 {r.p99_ms:.1f} ms (goal < 50 ms)")
    return "\n".join(lines)


def run(streams: int = 1000, seconds: float = 5.0, models: tuple[str, ...] = tuple(MODELS),
        protocols: tuple[str, ...] = ("http", "websocket"), rates: tuple[float, ...] = (1.0, 10.0),
        pairs: int = 0) -> str:
    """Every model × protocol: closed loop with batching on and off, then open loops at each of ``rates``
    (steps/s per stream) that the closed loop showed the server can carry; then, with identity and seed
    among ``models``, ``pairs`` more closed loops of each per protocol, alternating (``paired_ratios``).
    ``models``: names of ``MODELS`` or model specs of ``rnnstream serve`` (``check_models``)."""
    check_models(models)
    results, skipped = [], []
    for model in models:
        for protocol in protocols:
            for batching in ("on", "off"):
                results.append(measure(model, protocol, batching, streams, seconds))
                print(report(results[-1:]).splitlines()[1], flush=True)
            capacity = results[-2].steps_per_second  # closed loop, batching on
            for rate in rates:
                if rate * streams > OPEN_LOOP_SHARE * capacity:
                    skipped.append(f"{protocol}: {model}, open loop at {rate:g} steps/s per stream not run: "
                                   f"{rate * streams:,.0f} steps/s offered, the closed loop carried {capacity:,.0f}")
                    print(skipped[-1], flush=True)
                    continue
                results.append(measure(model, protocol, "on", streams, seconds, rate))
                print(report(results[-1:]).splitlines()[1], flush=True)
    lines = [report(results), *skipped]
    if pairs and {"identity", "seed"} <= set(models):
        lines += [pairs_report(protocol, paired_ratios(protocol, streams, seconds, pairs)) for protocol in protocols]
    return "\n".join(lines)


def pairs_report(protocol: str, ratios: list[float]) -> str:
    """
    >>> pairs_report("http", [0.9, 0.8, 0.85])
    'http: seed / identity in 3 alternating pairs of runs: 0.90, 0.80, 0.85; median 0.85 (goal >= 0.80)'
    """
    return (f"{protocol}: seed / identity in {len(ratios)} alternating pairs of runs: "
            f"{', '.join(f'{r:.2f}' for r in ratios)}; median {statistics.median(ratios):.2f} (goal >= 0.80)")


def paired_ratios(protocol: str, streams: int, seconds: float, pairs: int) -> list[float]:
    """Seed ÷ identity throughput (closed loop, batching on) from ``pairs`` runs of each, one right after
    the other: on a shared machine two runs minutes apart differ by ±15%, so one pair proves little."""
    ratios = []
    for _ in range(pairs):
        identity = measure("identity", protocol, "on", streams, seconds).steps_per_second
        seed = measure("seed", protocol, "on", streams, seconds).steps_per_second
        ratios.append(seed / identity)
        print(f"{protocol}: pair {len(ratios)}: identity {identity:,.0f}, seed {seed:,.0f} steps/s, "
              f"{ratios[-1]:.2f}", flush=True)
    return ratios


OPEN_LOOP_SHARE = 0.8
"""An open loop offers at most this share of the closed loop's throughput: above the capacity no queue
has a steady state, and the latency is only how long the run lasted."""
