"""The blocking client against a real server: the same answers as in process, streams from many threads on one
socket."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

import rnnstream
from rnnstream.client import Client, ServerError
from tests.server.conftest import ServerProcess

SEED = rnnstream.load(rnnstream.demo.SEED_MODEL)


@pytest.mark.parametrize("transport", ["websocket", "http"])
@pytest.mark.parametrize("T", [1, 7, 50])
def test_step_steps_and_end(client_server: ServerProcess, transport: Any, T: int) -> None:
    xs = np.random.default_rng(T).normal(0, 1, (2 * T + 1, 4)).astype(np.float32)
    ys, _ = SEED.run(xs[None], SEED.initial_state(1))
    with Client(client_server.url, transport=transport) as client:
        stream = client.stream("seed", f"sync-{uuid.uuid4().hex[:8]}")
        got = [stream.step(x) for x in xs[:T]]
        got += list(stream.steps(xs[T : 2 * T]))
        got.append(stream.end(xs[-1]))
        assert stream.next_step == 2 * T + 2 and stream.retry() is None
    np.testing.assert_allclose(np.stack(got), ys[0], rtol=1e-5, atol=1e-5)


def test_streams_stepped_from_many_threads_share_one_socket(client_server: ServerProcess) -> None:
    n, T = 24, 7
    xs = np.random.default_rng(5).normal(0, 1, (n, T, 4)).astype(np.float32)
    with Client(client_server.url) as client:
        streams = [client.stream("seed", f"threads-{k}-{uuid.uuid4().hex[:8]}") for k in range(n)]
        with ThreadPoolExecutor(max_workers=8) as pool:
            got = list(pool.map(lambda k: np.stack([streams[k].step(x) for x in xs[k]]), range(n)))
        assert client.stats.sockets == 1 and client.stats.requests == n * T
    ys, _ = SEED.run(xs, SEED.initial_state(n))
    np.testing.assert_allclose(np.stack(got), ys, rtol=1e-5, atol=1e-5)


def test_a_closed_client_says_so(client_server: ServerProcess) -> None:
    client = Client(client_server.url)
    stream = client.stream("seed", f"closed-{uuid.uuid4().hex[:8]}")
    stream.step(np.zeros(4, np.float32))
    client.close()
    client.close()  # twice: nothing more to do
    with pytest.raises(rnnstream.RnnstreamError, match="closed"):
        stream.step(np.zeros(4, np.float32))


@pytest.mark.parametrize("transport", ["websocket", "http"])
def test_a_token_is_sent_and_a_wrong_one_refused_at_once(transport: Any) -> None:
    server = ServerProcess("seed", "--token", "s3cret", "--grpc-port", "0").start()
    x = np.zeros(4, np.float32)
    try:
        with Client(server.url, transport=transport, token="s3cret") as client:
            assert np.allclose(client.stream("seed", "t").end(x), SEED.step(x[None], SEED.initial_state(1))[0][0])
        with Client(server.url, transport=transport, token="wrong") as client:
            with pytest.raises(ServerError) as refused:
                client.stream("seed", "t").step(x)
            assert refused.value.status == 401 and client.stats.retries == 0
    finally:
        server.stop()
