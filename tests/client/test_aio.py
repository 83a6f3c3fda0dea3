"""The asyncio client against a real server: step, steps, end, many streams on one socket, errors, retries."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import rnnstream
from rnnstream.client import AsyncClient, ClientTimeoutError, RetryPolicy, ServerError
from tests.server.conftest import ServerProcess

SEED = rnnstream.load(rnnstream.demo.SEED_MODEL)
CO2 = rnnstream.load(rnnstream.demo.CO2_MODEL)
TRANSPORTS = ["websocket", "http"]


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def replay(model: rnnstream.StreamModel, xs: Any) -> np.ndarray:
    """One stream's outputs, in process: ``(T, *out)``; ``xs`` ``(T, *shape)``, or a dict of them by input."""
    batch = {k: v[None] for k, v in xs.items()} if isinstance(xs, dict) else xs[None]
    ys, _ = model.run(batch, model.initial_state(1))
    return np.asarray(ys[0])


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("T", [1, 7, 50])
def test_step_steps_and_end_equal_an_in_process_run(client_server: ServerProcess, transport: Any, T: int) -> None:
    xs = np.random.default_rng(T).normal(0, 1, (3 * T, 4)).astype(np.float32)

    async def drive() -> np.ndarray:
        async with AsyncClient(client_server.url, transport=transport) as client:
            stream = client.stream("seed", new_id("aio"))
            got = [await stream.step(x) for x in xs[:T]]  # single steps
            got += list(await stream.steps(xs[T : 2 * T]))  # T steps in one call: (T, 1)
            got += [await stream.step(x) for x in xs[2 * T : -1]]
            got.append(await stream.end(xs[-1]))
            assert stream.next_step == 3 * T + 1 and client.stats.retries == 0
            return np.stack(got)

    np.testing.assert_allclose(asyncio.run(drive()), replay(SEED, xs), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_many_streams_share_one_socket(client_server: ServerProcess, transport: Any) -> None:
    n, T = 40, 7
    xs = np.random.default_rng(1).normal(0, 1, (n, T, 4)).astype(np.float32)
    ids = [new_id(f"mux{k}") for k in range(n)]

    async def one(client: AsyncClient, k: int) -> np.ndarray:
        stream = client.stream("seed", ids[k])
        return np.stack([await stream.step(x) for x in xs[k]])

    async def drive() -> tuple[np.ndarray, int]:
        async with AsyncClient(client_server.url, transport=transport) as client:
            got = await asyncio.gather(*(one(client, k) for k in range(n)))
            assert client.stats.requests == n * T and client.stats.retries == 0
            return np.stack(got), client.stats.sockets

    got, sockets = asyncio.run(drive())
    ys, _ = SEED.run(xs, SEED.initial_state(n))
    np.testing.assert_allclose(got, ys, rtol=1e-5, atol=1e-5)
    assert sockets == (1 if transport == "websocket" else 0)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_model_with_two_inputs_by_name_and_in_order(client_server: ServerProcess, transport: Any) -> None:
    co2 = np.array([[315.0], [316.5], [318.2]], np.float32)
    calendar = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], np.float32)

    async def drive() -> list[Any]:
        async with AsyncClient(client_server.url, transport=transport) as client:
            stream = client.stream("co2", new_id("co2"))
            first = await stream.step({"co2": co2[0], "calendar": calendar[0]})
            rest = await stream.steps([co2[1:], calendar[1:]])  # in input order: co2, calendar
            return [first, rest]

    first, rest = asyncio.run(drive())
    got = np.concatenate([np.asarray(first)[None], np.asarray(rest)])  # (3, 1)
    np.testing.assert_allclose(got, replay(CO2, {"co2": co2, "calendar": calendar}), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_token_ids(client_server: ServerProcess, transport: Any) -> None:
    text = rnnstream.load(rnnstream.demo.TEXT_MODEL)
    ids = np.random.default_rng(6).integers(0, 76, 9)

    async def drive() -> np.ndarray:
        async with AsyncClient(client_server.url, transport=transport) as client:
            stream = client.stream("text", new_id("tokens"))
            first = await stream.step(int(ids[0]))  # a token id: a plain int, or a 0-d array
            return np.concatenate([np.asarray(first)[None], np.asarray(await stream.steps(ids[1:]))])

    np.testing.assert_allclose(asyncio.run(drive()), replay(text, ids), rtol=1e-5, atol=1e-5)


def test_refusals_raise_typed_errors_with_the_servers_message(client_server: ServerProcess) -> None:
    async def drive() -> None:
        async with AsyncClient(client_server.url, retry=RetryPolicy(deadline=5)) as client:
            with pytest.raises(ServerError, match="nope") as unknown:
                await client.stream("nope", "a").step(np.zeros(4, np.float32))
            assert unknown.value.status == 404
            with pytest.raises(rnnstream.InputError, match=r"shape \[4\]"):
                await client.stream("seed", "a").step(np.zeros(3, np.float32))
            late = client.stream("seed", new_id("late"), next_step=5)  # never started: the server says so
            with pytest.raises(ServerError) as never:
                await late.step(np.zeros(4, np.float32))
            assert never.value.status == 400 and late.next_step == 5

    asyncio.run(drive())


def test_a_step_out_of_order_says_where_the_server_is_and_a_resend_gets_the_stored_output(
    client_server: ServerProcess,
) -> None:
    x = np.random.default_rng(2).normal(0, 1, (3, 4)).astype(np.float32)
    stream_id = new_id("order")

    async def drive() -> None:
        async with AsyncClient(client_server.url) as client:
            stream = client.stream("seed", stream_id)
            outputs = [await stream.step(x[0]), await stream.step(x[1])]
            ahead = client.stream("seed", stream_id, next_step=7)
            with pytest.raises(rnnstream.StepOrderError) as error:
                await ahead.step(x[2])
            assert error.value.expected == 3
            again = client.stream("seed", stream_id, next_step=2)  # "applied, but its answer never came"
            assert np.array_equal(await again.step(x[1]), outputs[1]) and again.next_step == 3
            assert np.allclose(await stream.step(x[2]), replay(SEED, x)[2], atol=1e-5)

    asyncio.run(drive())


@pytest.fixture(scope="module")
def small_server() -> Iterator[ServerProcess]:
    """A server of one live stream at most, and at most 4 steps in one priming request."""
    process = ServerProcess("seed", "--max-streams", "1", "--max-prime-steps", "4", "--grpc-port", "0").start()
    yield process
    process.stop()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_resent_start_or_end_gets_its_stored_output(client_server: ServerProcess, transport: Any) -> None:
    xs = np.random.default_rng(7).normal(0, 1, (3, 4)).astype(np.float32)
    stream_id = new_id("ends")

    async def drive() -> None:
        async with AsyncClient(client_server.url, transport=transport) as client:
            stream = client.stream("seed", stream_id)
            start = await stream.step(xs[0])
            assert np.array_equal(await client.stream("seed", stream_id).step(xs[0]), start)  # start, resent
            await stream.step(xs[1])
            end = await stream.end(xs[2])
            resent = client.stream("seed", stream_id, next_step=3)  # the end, as a retry sends it
            assert np.array_equal(await resent.end(xs[2]), end) and resent.next_step == 4
            np.testing.assert_allclose(end, replay(SEED, xs)[2], rtol=1e-5, atol=1e-5)

    asyncio.run(drive())


def test_a_full_server_is_retried_until_room_is_made(small_server: ServerProcess) -> None:
    x = np.zeros(4, np.float32)

    async def drive() -> None:
        async with AsyncClient(small_server.url, retry=RetryPolicy(deadline=1.0, max_backoff=0.2)) as client:
            first = client.stream("seed", new_id("full"))
            await first.step(x)
            with pytest.raises(ClientTimeoutError) as timeout:  # 503, retryable: retried for the deadline
                await client.stream("seed", new_id("full")).step(x)
            assert not timeout.value.unknown and client.stats.retries > 0
        async with AsyncClient(small_server.url, retry=RetryPolicy(deadline=30, max_backoff=0.2)) as client:
            second = client.stream("seed", new_id("full"))
            waiting = asyncio.create_task(second.step(x))
            while client.stats.retries == 0:
                await asyncio.sleep(0.05)
            await client.stream("seed", first.sequence_id, next_step=2).end(x)  # room for one again
            assert np.allclose(await waiting, replay(SEED, x[None])[0], atol=1e-5)
            await second.end(x)

    asyncio.run(drive())


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_history_longer_than_the_servers_limit_goes_in_parts(small_server: ServerProcess, transport: Any) -> None:
    xs = np.random.default_rng(4).normal(0, 1, (10, 4)).astype(np.float32)

    async def drive() -> tuple[np.ndarray, int | None]:
        async with AsyncClient(small_server.url, transport=transport) as client:
            stream = client.stream("seed", new_id("parts"))
            got = await stream.steps(xs, end=True)  # 4 + 4 + 2 steps, the last request ends the stream
            assert stream.next_step == 11
            return np.asarray(got), client.max_prime_steps

    got, limit = asyncio.run(drive())
    np.testing.assert_allclose(got, replay(SEED, xs), rtol=1e-5, atol=1e-5)
    assert limit == 4
