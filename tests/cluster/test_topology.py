"""The deployment: HAProxy → 3 ``rnnstream serve`` replicas → a Redis Cluster of 3 masters with a replica each,
all real processes; the fault test kills, drains and restarts them under 200 streams."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import websockets

import rnnstream
from rnnstream.cluster import Topology
from rnnstream.cluster.redis_nodes import free_port
from tests.cluster.fault_clients import FaultClients, Score, inputs

SEED = rnnstream.load(rnnstream.demo.SEED_MODEL)
TOL = {"rtol": 1e-5, "atol": 1e-5}


def started(directory: Path, durable: int) -> Iterator[Topology]:
    topology = Topology(directory, durable=durable).start()
    yield topology
    topology.stop()


@pytest.fixture(scope="module")
def durable_topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    yield from started(tmp_path_factory.mktemp("durable"), durable=1)


@pytest.fixture(scope="module")
def plain_topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    yield from started(tmp_path_factory.mktemp("plain"), durable=0)


def served_by(topology: Topology) -> dict[str, int]:
    """Requests HAProxy sent to each replica so far, from its statistics (CSV)."""
    assert topology.haproxy is not None
    with urllib.request.urlopen(f"http://127.0.0.1:{topology.haproxy.stats_port}/;csv", timeout=5) as reply:
        rows = [line.split(",") for line in reply.read().decode().splitlines()]
    return {row[1]: int(row[7]) for row in rows if len(row) > 7 and row[0] == "replicas" and row[1].startswith("r")}


def test_round_robin_over_http_and_websocket(durable_topology: Topology) -> None:
    before, T = served_by(durable_topology), 9
    xs = inputs(7, T)
    expected, _ = SEED.run(xs[None], SEED.initial_state(1))
    with httpx.Client(base_url=durable_topology.url) as client:  # one keep-alive connection
        got = [client.post("/v2/models/seed/infer", json={
            "inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": xs[t].tolist()}],
            "parameters": {"sequence_id": "rr-http", "sequence_start": t == 0, "sequence_step": t + 1},
        }).json()["outputs"][0]["data"][0] for t in range(T)]
    np.testing.assert_allclose(got, expected[0, :, 0], **TOL)
    after = served_by(durable_topology)
    assert sorted(after[name] - before[name] for name in after) == [3, 3, 3]  # every replica took its share

    async def over_websocket() -> list[float]:
        async with websockets.connect(durable_topology.url.replace("http://", "ws://") + "/v2/stream") as socket:
            for t in range(T):
                await socket.send(json.dumps({"model": "seed", "id": str(t), "sequence_id": "rr-ws",
                                              "inputs": xs[t].tolist(), "sequence_start": t == 0,
                                              "sequence_step": t + 1}))
            return [json.loads(await socket.recv())["outputs"]["output"][0] for _ in range(T)]

    np.testing.assert_allclose(asyncio.run(over_websocket()), expected[0, :, 0], **TOL)


def run_faults(topology: Topology, clients: FaultClients) -> dict[str, Score]:
    """The fault schedule while the clients step: SIGKILL a replica, SIGTERM another, SIGKILL a Redis master;
    each restarted. Returns the score after each phase."""
    thread, phases = clients.run_in_thread(), {}

    def phase(name: str, seconds: float) -> None:
        time.sleep(seconds)
        phases[name] = Score(**{**vars(clients.score), "errors": dict(clients.score.errors)})

    phase("warm", 3)
    topology.servers[0].signal(signal.SIGKILL)
    phase("replica killed", 1)
    topology.restart(topology.servers[0])
    phase("replica restarted", 2)
    topology.servers[1].signal(signal.SIGTERM)
    phase("replica drained", 1)
    topology.restart(topology.servers[1])
    phase("replica back", 2)
    victim = topology.redis.kill_master(0)
    phase("redis master failed over", 1)
    topology.redis.restart(victim)
    phase("redis node rejoined", 3)
    clients.stop.set()
    thread.join(timeout=60)
    assert not thread.is_alive()
    return phases


def check_replay(topology: Topology, clients: FaultClients) -> None:
    """Every acknowledged output equals the in-process replay, and the store holds every stream at its
    acknowledged step."""
    streams = rnnstream.Streams(SEED, topology.redis.url())
    try:
        for k, outputs in enumerate(clients.outputs):
            expected, _ = SEED.run(clients.xs[k][None, : len(outputs)], SEED.initial_state(1))
            np.testing.assert_allclose(outputs, expected[0, :, 0], **TOL)
            assert streams.steps_applied(f"fault-{k}") == len(outputs)
    finally:
        streams.close_store()


def report(title: str, phases: dict[str, Score], capsys: pytest.CaptureFixture[str]) -> None:
    with capsys.disabled():
        print(f"\n{title}")
        for name, score in phases.items():
            print(f"  after {name:<26} acknowledged {score.acknowledged:>6}  retried {score.retried:>5}  "
                  f"lost {score.lost:>3}  doubled {score.doubled}  errors {score.errors}")


@pytest.mark.parametrize("durable", [1, 0], ids=["durable", "plain"])
def test_faults_lose_no_acknowledged_step(durable: int, request: pytest.FixtureRequest,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    topology: Topology = request.getfixturevalue("durable_topology" if durable else "plain_topology")
    clients = FaultClients(topology.url, "seed", streams=200, max_steps=5_000)
    phases = run_faults(topology, clients)
    report(f"200 streams through HAProxy, store {topology.store}", phases, capsys)
    final = clients.score
    assert final.doubled == 0
    assert min(len(outputs) for outputs in clients.outputs) > 10
    if durable:
        assert final.lost == 0
    check_replay(topology, clients)
    drained = phases["replica drained"].errors
    assert drained == phases["replica restarted"].errors, "a draining replica failed requests"


def test_cluster_demo_command_serves_and_stops_everything_on_ctrl_c() -> None:
    port = free_port()
    demo = subprocess.Popen([sys.executable, "-m", "rnnstream", "cluster-demo", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert demo.stdout is not None
    printed = []
    for line in demo.stdout:
        printed.append(line)
        if line.startswith("Ctrl-C"):
            break
    try:
        reply = httpx.post(f"http://127.0.0.1:{port}/v2/models/seed/infer", json={
            "inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [0, 0, 0, 0]}],
            "parameters": {"sequence_id": "demo", "sequence_start": True, "sequence_step": 1}})
        assert reply.status_code == 200, "".join(printed)
    finally:
        demo.send_signal(signal.SIGINT)
        assert demo.wait(timeout=60) == 0
    ports = [int(m) for m in re.findall(r"127\.0\.0\.1:(\d+)", "".join(printed))]
    assert len(ports) >= 11  # HAProxy, its statistics, 3 replicas, 6 Redis nodes
    for stopped in ports:
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", stopped), timeout=1).close()
