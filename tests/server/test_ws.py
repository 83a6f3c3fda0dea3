"""The WebSocket endpoint against a real server process, with the websockets client."""

from __future__ import annotations

import asyncio
import json
import struct
import uuid
from typing import Any

import numpy as np
import pytest
import websockets

import rnnstream
from tests.server.conftest import ServerProcess

SEED = rnnstream.load(rnnstream.demo.SEED_MODEL)


def ws_url(server: ServerProcess) -> str:
    return server.url.replace("http://", "ws://") + "/v2/stream"


def request(stream: str, x: np.ndarray, t: int, **extra: Any) -> dict[str, Any]:
    return {"model": "seed", "id": f"{stream}/{t}", "sequence_id": stream, "inputs": x.tolist(),
            "sequence_start": t == 0, **extra}


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def test_many_streams_on_one_socket_equal_in_process_runs(server: ServerProcess) -> None:
    n, T = 8, 5
    xs = np.random.default_rng(0).normal(0, 1, (n, T, 4)).astype(np.float32)
    ids = [f"ws-{uuid.uuid4().hex[:8]}" for _ in range(n)]

    async def drive() -> np.ndarray:
        got = np.zeros((n, T), np.float32)
        async with websockets.connect(ws_url(server)) as socket:
            for t in range(T):  # one message per stream and step, all sent before reading
                for k in range(n):
                    await socket.send(json.dumps(request(ids[k], xs[k, t], t)))
            for _ in range(n * T):
                reply = json.loads(await socket.recv())
                stream, t = reply["id"].split("/")
                got[ids.index(stream), int(t)] = reply["outputs"]["output"][0]
        return got

    ys, _ = SEED.run(xs, SEED.initial_state(n))
    np.testing.assert_allclose(run(drive()), ys[:, :, 0], rtol=1e-6, atol=1e-6)


def test_batched_messages_and_errors_keep_the_socket_open(server: ServerProcess) -> None:
    stream = f"ws-{uuid.uuid4().hex[:8]}"
    xs = np.random.default_rng(1).normal(0, 1, (2, 4)).astype(np.float32)
    ys, _ = SEED.run(xs[None], SEED.initial_state(1))

    async def drive() -> list[Any]:
        async with websockets.connect(ws_url(server)) as socket:
            replies = []
            for message in (
                "not json",
                json.dumps({"model": "nope", "sequence_id": "x", "inputs": [0, 0, 0, 0]}),
                json.dumps(request("never-started", xs[0], 1)),
                json.dumps({"requests": [request(stream, xs[0], 0, sequence_step=1),
                                         {"model": "seed", "sequence_id": stream, "inputs": [1, 2]},
                                         request(stream, xs[1], 1, sequence_step=2)]}),
                json.dumps(request(stream, xs[1], 1, sequence_step=5)),
            ):
                await socket.send(message)
                replies.append(json.loads(await socket.recv()))
            return replies

    bad_json, bad_model, unknown, batch, skipped = run(drive())
    assert bad_json["code"] == 400 and "not a valid request" in bad_json["error"]
    assert bad_model["code"] == 400 and "no model 'nope'" in bad_model["error"]
    assert unknown["code"] == 400 and "unknown sequence" in unknown["error"]
    first, wrong, second = batch["responses"]
    assert first["outputs"]["output"][0] == pytest.approx(ys[0, 0, 0], abs=1e-6)
    assert wrong["code"] == 400
    assert second["outputs"]["output"][0] == pytest.approx(ys[0, 1, 0], abs=1e-6)
    assert skipped["code"] == 409 and skipped["expected_step"] == 3


def test_binary_frames(server: ServerProcess) -> None:
    n = 3
    xs = np.random.default_rng(2).normal(0, 1, (n, 4)).astype(np.float32)
    ids = [f"wsb-{uuid.uuid4().hex[:8]}" for _ in range(n)]
    header = json.dumps({"model": "seed", "requests": [
        {"id": i, "sequence_id": s, "sequence_start": True} for i, s in enumerate(ids)]}).encode()

    async def drive() -> bytes:
        async with websockets.connect(ws_url(server)) as socket:
            await socket.send(struct.pack("<I", len(header)) + header + xs.tobytes())
            reply = await socket.recv()
            assert isinstance(reply, bytes)
            await socket.send(struct.pack("<I", 2) + b"{}")  # a bad frame: an error, the socket stays
            error = json.loads(await socket.recv())
            assert error["code"] == 400
            return reply

    reply = run(drive())
    (length,) = struct.unpack_from("<I", reply)
    meta = json.loads(reply[4 : 4 + length])
    assert [r["id"] for r in meta["responses"]] == [0, 1, 2]
    values = np.frombuffer(reply[4 + length :], "<f4")
    expected, _ = SEED.step(xs, SEED.initial_state(n))
    np.testing.assert_allclose(values, expected[:, 0], rtol=1e-6, atol=1e-6)
