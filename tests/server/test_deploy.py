"""Deployment: replicas sharing one Redis, a replica killed mid-run, auth, graceful shutdown."""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import websockets.sync.client

import rnnstream
from tests.redis_server import RedisServer
from tests.server.conftest import ServerProcess
from tests.server.test_http import INFER, body, output, reference

SEED = rnnstream.load(rnnstream.demo.SEED_MODEL)


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = RedisServer(tmp_path_factory.mktemp("redis-serve"), appendonly=True).start()
    yield server.url
    server.stop()


def test_two_replicas_on_one_redis_serve_any_stream(redis_url: str) -> None:
    replicas = [ServerProcess("seed", "--store", redis_url).start() for _ in range(2)]
    try:
        T, stream = 12, f"rep-{uuid.uuid4().hex[:8]}"
        xs = np.random.default_rng(0).normal(0, 1, (T, 4)).astype(np.float32)
        expected = reference(xs)
        got = []
        for t in range(8):  # alternate replicas on every step: no sticky routing
            url = replicas[t % 2].url
            got.append(output(httpx.post(url + INFER, json=body(xs[t], stream, sequence_start=t == 0,
                                                                   sequence_step=t + 1))))
        replicas[0].stop(signal.SIGKILL)  # a replica dies mid-run
        for t in range(8, T):
            got.append(output(httpx.post(replicas[1].url + INFER, json=body(xs[t], stream, sequence_step=t + 1))))
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)  # no acknowledged step lost
    finally:
        for replica in replicas:
            replica.stop()


def test_worker_processes_on_one_redis_serve_any_stream(redis_url: str) -> None:
    """``--workers 2``: each request on a connection of its own, so either process may answer it."""
    server = ServerProcess("seed", "--store", redis_url, "--workers", "2").start()
    try:
        T, stream = 10, f"work-{uuid.uuid4().hex[:8]}"
        xs = np.random.default_rng(1).normal(0, 1, (T, 4)).astype(np.float32)
        got = [output(httpx.post(server.url + INFER, json=body(xs[t], stream, sequence_start=t == 0)))
               for t in range(T)]
        np.testing.assert_allclose(got, reference(xs), rtol=1e-6, atol=1e-6)
    finally:
        server.stop()


def test_bearer_token(tmp_path: Path) -> None:
    server = ServerProcess("builtin:identity", "--token", "s3cret").start()
    try:
        request = body(np.zeros(4), "auth-1", sequence_start=True)
        path = server.url + "/v2/models/identity/infer"
        assert httpx.post(path, json=request).status_code == 401
        assert httpx.post(path, json=request, headers={"Authorization": "Bearer nope"}).status_code == 401
        assert httpx.post(path, json=request, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert httpx.get(server.url + "/v2/health/ready").status_code == 200  # probes need no token
        assert httpx.get(server.url + "/metrics").status_code == 401
        socket_url = server.url.replace("http://", "ws://") + "/v2/stream"
        with pytest.raises(websockets.exceptions.InvalidStatus):
            websockets.sync.client.connect(socket_url).close()
        with websockets.sync.client.connect(socket_url, additional_headers={"Authorization": "Bearer s3cret"}) as ws:
            ws.send('{"model": "identity", "sequence_id": "a", "sequence_start": true, "inputs": [1, 2, 3, 4]}')
            assert '"outputs"' in ws.recv()
    finally:
        server.stop()


def test_graceful_shutdown_finishes_in_flight_requests(redis_url: str) -> None:
    server = ServerProcess("seed", "--store", redis_url, "--max-delay-ms", "3000", "--max-batch", "1000").start()
    stream_ids = [f"drain-{uuid.uuid4().hex[:8]}" for _ in range(8)]
    x = np.zeros(4, np.float32)

    def call(stream: str) -> int:
        return httpx.post(server.url + INFER, json=body(x, stream, sequence_start=True), timeout=30).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(call, s) for s in stream_ids]
        time.sleep(1.5)  # the requests now wait in the batcher for its 3 s delay (arrived, even on a busy machine)
        code = server.stop(signal.SIGTERM)
        statuses = [f.result() for f in futures]
    assert statuses == [200] * 8
    assert code in (0, -signal.SIGTERM)  # uvicorn re-raises SIGTERM once it has drained
    streams = rnnstream.Streams(SEED, redis_url)
    assert all(streams.steps_applied(s) == 1 for s in stream_ids)  # applied and kept
