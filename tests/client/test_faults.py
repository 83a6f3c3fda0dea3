"""The client through server crashes: a server on Redis SIGKILLed and restarted mid-run loses no step and doubles
none; every stream's outputs equal an in-process replay of its inputs."""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import rnnstream
from rnnstream.client import AsyncClient, ClientStats, ClientTimeoutError, RetryPolicy
from tests.redis_server import RedisServer
from tests.server.conftest import ServerProcess

SEED = rnnstream.load(rnnstream.demo.SEED_MODEL)


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = RedisServer(tmp_path_factory.mktemp("client-redis"), appendonly=True).start()
    yield server.url
    server.stop()


def replay(xs: np.ndarray, ids: list[str]) -> np.ndarray:
    """Each stream's outputs from ``rnnstream.Streams`` in process, one step at a time: ``(N, M, 1)``."""
    streams = rnnstream.Streams(SEED)
    steps = [streams.step({i: xs[k, t] for k, i in enumerate(ids)}) for t in range(xs.shape[1])]
    return np.stack([np.stack([np.asarray(step[i]) for step in steps]) for i in ids])


async def drive(server: ServerProcess, transport: Any, xs: np.ndarray, ids: list[str], kills: list[int]) -> tuple[
        np.ndarray, ClientStats]:
    """Step every stream through one client while the server is stopped by each signal of ``kills`` in turn (SIGKILL:
    no answer to what it received; SIGTERM: it drains, closing sockets with 1012) and restarted."""
    N, M = xs.shape[:2]
    done = [0]

    async def one(client: AsyncClient, k: int) -> np.ndarray:
        stream, found = client.stream("seed", ids[k]), []
        for t in range(M):
            last = t == M - 1 and k % 2 == 0  # half the streams end with their last step
            found.append(await (stream.end(xs[k, t]) if last else stream.step(xs[k, t])))
            done[0] += 1
        return np.stack(found)

    async def crash() -> None:
        for n, sig in enumerate(kills):
            while done[0] < (n + 1) * N * M // (len(kills) + 1):
                await asyncio.sleep(0.005)
            await asyncio.to_thread(server.stop, sig)  # mid-run: steps in flight
            await asyncio.to_thread(server.start)  # the same port

    policy = RetryPolicy(deadline=60, max_backoff=0.5)
    async with AsyncClient(server.url, transport=transport, retry=policy) as client:
        got, _ = await asyncio.gather(asyncio.gather(*(one(client, k) for k in range(N))), crash())
    return np.stack(got), client.stats


KILL, TERM = signal.SIGKILL, signal.SIGTERM


@pytest.mark.parametrize(("transport", "N", "M", "kills"),
                         [("websocket", 50, 40, [KILL, TERM, KILL]), ("http", 20, 20, [KILL, KILL])])
def test_sigkill_and_restart_on_redis_lose_no_step_and_double_none(
    redis_url: str, transport: str, N: int, M: int, kills: list[int], capsys: pytest.CaptureFixture[str]
) -> None:
    xs = np.random.default_rng(N).normal(0, 1, (N, M, 4)).astype(np.float32)
    ids = [f"fault-{transport}-{k}-{uuid.uuid4().hex[:6]}" for k in range(N)]
    server = ServerProcess("seed", "--store", redis_url, "--grpc-port", "0").start()
    try:
        got, stats = asyncio.run(drive(server, transport, xs, ids, kills))
    finally:
        server.stop()
    want = replay(xs, ids)
    doubled_or_lost = [ids[k] for k in range(N) if not np.allclose(got[k], want[k], rtol=1e-5, atol=1e-5)]
    stored = rnnstream.Streams(SEED, redis_url)
    applied = [stored.steps_applied(ids[k]) for k in range(1, N, 2)]  # the streams left open
    with capsys.disabled():
        stops = ", ".join(signal.Signals(k).name for k in kills)
        print(f"\n{transport}: {N} streams × {M} steps, stopped by {stops}: {stats.requests} steps answered, "
              f"{stats.retries} retries, {stats.reconnects} reconnects, {len(doubled_or_lost)} lost or doubled")
    assert doubled_or_lost == [] and stats.requests == N * M
    assert applied == [M] * len(applied)  # each step applied once: none lost, none doubled
    assert stats.retries > 0 and (transport == "http" or stats.reconnects >= len(kills))


def test_a_step_whose_fate_is_unknown_is_resent_before_the_next(redis_url: str) -> None:
    server = ServerProcess("seed", "--store", redis_url, "--grpc-port", "0").start()
    xs = np.random.default_rng(3).normal(0, 1, (3, 4)).astype(np.float32)

    async def run() -> np.ndarray:
        async with AsyncClient(server.url, retry=RetryPolicy(deadline=1.0, max_backoff=0.2)) as client:
            stream = client.stream("seed", f"unknown-{uuid.uuid4().hex[:8]}")
            found = [await stream.step(xs[0])]
            server.stop(signal.SIGKILL)
            with pytest.raises(ClientTimeoutError) as timeout:  # no server: was step 2 applied? unknown
                await stream.step(xs[1])
            assert timeout.value.unknown and stream.pending is not None and stream.next_step == 2
            await asyncio.to_thread(server.start)
            resent = await stream.retry()  # step 2, resent as it was: its output
            assert resent is not None
            found.append(resent)
            found.append(await stream.step(xs[2]))
            assert stream.pending is None and stream.next_step == 4
            return np.stack(found)

    try:
        np.testing.assert_allclose(asyncio.run(run()), replay(xs[None], ["x"])[0], rtol=1e-5, atol=1e-5)
    finally:
        server.stop()
