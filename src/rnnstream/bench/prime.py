"""``rnnstream bench prime``: a stream that (re)joins with a backlog, as one request or as one per step.

Starts ``rnnstream serve seed`` and, round after round, sends a history of ``steps`` steps to a fresh stream
in two ways over one keep-alive HTTP connection: ``steps`` single-step infer requests, one after another
(each step numbered, as a client that resends its backlog must: a stream's steps are ordered), and one
history-priming request whose input is ``[1, steps, 4]`` (answering the last step's outputs, then, on another
stream, all of them). It checks that both ways end with the same output and reports the median time of
each and the ratio (issue #23's goal: ≥ 20× at 1,000 steps). Client and server share this machine.
"""

from __future__ import annotations

import http.client
import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from rnnstream.bench.serve import wait_ready
from rnnstream.cluster.redis_nodes import free_port

PATH = "/v2/models/seed/infer"


@dataclass(frozen=True)
class PrimeResult:
    steps: int
    rounds: int
    single: float  # seconds: the median round of ``steps`` single-step requests
    last: float  # seconds: the median history request answering the last step's outputs
    every: float  # seconds: the median history request answering every step's outputs
    difference: float  # the largest difference between the two ways' last outputs

    @property
    def speedup(self) -> float:
        return self.single / self.last


def post(connection: http.client.HTTPConnection, body: dict[str, Any]) -> dict[str, Any]:
    """One infer request on ``connection``; its JSON reply (an error raises)."""
    connection.request("POST", PATH, json.dumps(body), {"Content-Type": "application/json"})
    response = connection.getresponse()
    reply: dict[str, Any] = json.loads(response.read())
    if response.status != 200:
        raise RuntimeError(f"the server answered {response.status}: {reply}")
    return reply


def request(xs: np.ndarray, stream: str, first: int, outputs: str = "last") -> dict[str, Any]:
    """An infer body for ``xs``: ``[4]`` one step, ``[T, 4]`` a history of T steps numbered from ``first``."""
    return {"inputs": [{"name": "input", "shape": [1, *xs.shape], "datatype": "FP32", "data": xs.ravel().tolist()}],
            "parameters": {"sequence_id": stream, "sequence_start": first == 1, "sequence_step": first,
                           "sequence_outputs": outputs}}


def one_round(connection: http.client.HTTPConnection, xs: np.ndarray, k: int) -> tuple[float, float, float, float]:
    """Seconds for the single steps, the history answering the last output, and the one answering all; and
    the largest difference between the single steps' last output and the history's."""
    started = time.perf_counter()
    for t, x in enumerate(xs):
        reply = post(connection, request(x, f"single-{k}", t + 1))
    single = time.perf_counter() - started
    started = time.perf_counter()
    primed = post(connection, request(xs, f"last-{k}", 1))
    last = time.perf_counter() - started
    started = time.perf_counter()
    post(connection, request(xs, f"all-{k}", 1, "all"))
    every = time.perf_counter() - started
    difference = float(np.max(np.abs(np.subtract(reply["outputs"][0]["data"], primed["outputs"][0]["data"]))))
    return single, last, every, difference


def run(steps: int = 1000, rounds: int = 5) -> PrimeResult:
    """Start a server, time ``rounds`` rounds (after one warm-up round) and stop it."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "rnnstream", "serve", "seed", "--port", str(port),
                               "--grpc-port", "0", "--max-prime-steps", str(max(steps, 1))],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(f"http://127.0.0.1:{port}", server)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        rng = np.random.default_rng(0)
        timings = [one_round(connection, rng.normal(0, 1, (steps, 4)).astype(np.float32), k)
                   for k in range(rounds + 1)][1:]
        connection.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    single, last, every = (statistics.median(t[k] for t in timings) for k in range(3))
    return PrimeResult(steps, rounds, single, last, every, max(t[3] for t in timings))


def report(result: PrimeResult) -> str:
    """The result as a short table.

    >>> print(report(PrimeResult(1000, 5, 0.25, 0.01, 0.0125, 0.0)))
    priming a 1,000-step history of the seed model over HTTP (JSON, one keep-alive connection; median of 5 rounds)
      1,000 single-step requests              250.0 ms  (250.0 µs a step)
      one request, the last step's outputs     10.0 ms  25.0× faster
      one request, every step's outputs        12.5 ms  20.0× faster
      last outputs agree within 0e+00
    """
    n = f"{result.steps:,}"
    return "\n".join([
        f"priming a {n}-step history of the seed model over HTTP (JSON, one keep-alive connection; median of "
        f"{result.rounds} rounds)",
        f"  {n + ' single-step requests':<38}{result.single * 1e3:>7.1f} ms  "
        f"({result.single / result.steps * 1e6:.1f} µs a step)",
        f"  {'one request, the last step' + chr(39) + 's outputs':<38}{result.last * 1e3:>7.1f} ms  "
        f"{result.speedup:.1f}× faster",
        f"  {'one request, every step' + chr(39) + 's outputs':<38}{result.every * 1e3:>7.1f} ms  "
        f"{result.single / result.every:.1f}× faster",
        f"  last outputs agree within {result.difference:.0e}",
    ])
