"""The serving benchmark's parts: the load generator against a real server, and the report."""

from __future__ import annotations

import json
import subprocess
import sys

from rnnstream.bench.serve import LoadResult, paired_ratios, report, run
from tests.server.conftest import ServerProcess


def test_load_generator_drives_a_real_server() -> None:
    server = ServerProcess("id=builtin:identity").start()
    try:
        for protocol in ("http", "websocket", "grpc"):
            target = server.grpc_url if protocol == "grpc" else server.url
            for rate in ("0", "20"):  # closed loop, then an open loop of 20 steps/s per stream
                command = [sys.executable, "-m", "rnnstream.bench.load", target, "id", protocol, "20", "0.5", rate]
                run = subprocess.run(command, capture_output=True, text=True, timeout=120)
                assert run.returncode == 0, run.stderr
                result = json.loads(run.stdout)
                assert result["steps"] > 0 and result["p99_ms"] >= result["p50_ms"] > 0
                if rate != "0":  # the schedule sends 10 steps per stream in 0.5 s, answered or not
                    assert result["steps"] == 20 * 10
    finally:
        server.stop()


def test_report_shows_the_goal_ratios() -> None:
    text = report([
        LoadResult("identity", "http", "on", 1000.0, 1.0, 2.0),
        LoadResult("seed", "http", "on", 900.0, 1.0, 2.0),
        LoadResult("large", "http", "on", 600.0, 1.0, 2.0),
        LoadResult("large", "http", "off", 100.0, 1.0, 2.0),
    ])
    assert "seed / identity throughput = 0.90" in text and "batching on / off = 6.0x" in text


def test_report_shows_open_loop_latency() -> None:
    text = report([LoadResult("seed", "websocket", "on", 10_000.0, 3.0, 12.5, rate=10.0)])
    assert "10/s each" in text
    assert "websocket: seed, open loop, 10 steps/s per stream (10,000 in all): p99 12.5 ms" in text


def test_an_open_loop_beyond_the_closed_loop_capacity_is_not_run() -> None:
    text = run(streams=10, seconds=0.5, models=("identity",), protocols=("websocket",), rates=(2.0, 1e9))
    assert "identity  websocket  on        2/s each" in text
    assert "open loop at 1e+09 steps/s per stream not run: 10,000,000,000 steps/s offered" in text


def test_seed_and_identity_are_compared_in_alternating_pairs() -> None:
    ratios = paired_ratios("websocket", streams=10, seconds=0.3, pairs=2)
    assert len(ratios) == 2 and all(0 < r < 10 for r in ratios)
