"""The capacity benchmark against a real Redis Cluster with replicas and real servers, and its arithmetic."""

from __future__ import annotations

import re

import rnnstream
from rnnstream.bench.capacity import StoreFigures, report, run


def test_a_short_run_measures_every_input() -> None:
    text = run("seed", streams=20, seconds=0.5, plan_streams=1000, plan_rate=2.0)
    assert "state row 2,400 bytes" in text  # the seed model: LSTM(100) → LSTM(200), (100 + 100 + 200 + 200) floats
    rows = {line.split()[0]: line.split() for line in text.splitlines() if line.startswith(("plain ", "replicas=1 "))}
    for name in ("plain", "replicas=1"):
        steps_per_second, server_per_core, master_us = (float(rows[name][i].replace(",", "")) for i in (1, 4, 5))
        assert steps_per_second > 0 and server_per_core > 0 and master_us > 0
    assert re.search(r"capacity for 1,000 streams at 2 steps/s \(2,000 stream-steps/s\)", text)


def test_the_model_rounds_up_replica_cores_and_redis_masters() -> None:
    seed = rnnstream.load(rnnstream.demo.SEED_MODEL)
    figures = [StoreFigures(0, 5000, 1, 2, server_per_core=9000, master_cpu_us=20, replica_cpu_us=5),
               StoreFigures(1, 5000, 1, 2, server_per_core=9000, master_cpu_us=22, replica_cpu_us=6)]
    text = report("seed", seed, 90_000, figures, (4000, 5000), streams=100_000, rate=1.0)
    # 100,000 steps/s: 100,000 / 9,000 = 11.1 → 12 cores; 100,000 × 20 µs = 2 cores / 0.7 → 3 masters (22 µs: 4);
    # (2 × (2,400 + 4) + 200) bytes × 100,000 × 8 = 4.01 Gbit/s
    assert "plain        replica cores    12, Redis masters    3 (+ 3 replicas), network to Redis 4.01 Gbit/s" in text
    assert "replicas=1   replica cores    12, Redis masters    4 (+ 4 replicas)" in text
    assert "through HAProxy, 3 replicas: 4,000 stream-steps/s; one replica alone: 5,000" in text
