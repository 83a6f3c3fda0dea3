"""The WebSocket endpoint against a real server process, with the websockets client."""

from __future__ import annotations

import asyncio
import json
import re
import struct
import uuid
from typing import Any

import httpx
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
    assert bad_json["code"] == 400 and "not valid JSON" in bad_json["error"]
    assert bad_model["code"] == 404 and "no model 'nope'" in bad_model["error"]
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


def test_requests_are_counted_by_code(server: ServerProcess) -> None:
    def counted(code: str) -> float:
        text = httpx.get(server.url + "/metrics", timeout=10).text
        found = re.search(rf'rnnstream_requests_total{{code="{code}",model="seed",protocol="websocket"}} (\S+)', text)
        return float(found.group(1)) if found else 0.0

    before = counted("200"), counted("400")
    stream, x = f"ws-{uuid.uuid4().hex[:8]}", np.zeros(4, np.float32)
    unknown = request(f"ws-{uuid.uuid4().hex[:8]}", x, 1)  # a step of a sequence never started: 400

    async def drive() -> Any:
        async with websockets.connect(ws_url(server)) as socket:
            await socket.send(json.dumps({"requests": [request(stream, x, 0), unknown, request(stream, x, 1)]}))
            return json.loads(await socket.recv())

    codes = [r.get("code", 200) for r in run(drive())["responses"]]
    assert codes == [200, 400, 200]
    assert (counted("200") - before[0], counted("400") - before[1]) == (2, 1)


def test_binary_frames_with_token_ids_and_several_inputs(demo_server: ServerProcess) -> None:
    """Token ids (int64, one per request) and a two-input model: each request's values in input order."""
    text, co2 = rnnstream.load(rnnstream.demo.TEXT_MODEL), rnnstream.load(rnnstream.demo.CO2_MODEL)
    tokens = np.array([5, 17, 40], np.int64)
    levels = np.array([[315.0], [316.5], [318.2]], np.float32)
    calendar = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], np.float32)
    co2_values = np.concatenate([levels, calendar], axis=1)  # per request: co2, then calendar

    def frame(model: str, values: bytes, n: int) -> bytes:
        header = json.dumps({"model": model, "requests": [
            {"id": k, "sequence_id": f"wsb-{uuid.uuid4().hex[:8]}", "sequence_start": True} for k in range(n)]})
        return struct.pack("<I", len(header)) + header.encode() + values

    async def drive() -> list[bytes]:
        async with websockets.connect(ws_url(demo_server)) as socket:
            replies = []
            for message in (frame("text", tokens.tobytes(), 3), frame("co2", co2_values.tobytes(), 3)):
                await socket.send(message)
                replies.append(await socket.recv())
            return replies

    def values_of(reply: bytes) -> np.ndarray:
        (length,) = struct.unpack_from("<I", reply)
        assert all("error" not in r for r in json.loads(reply[4 : 4 + length])["responses"])
        return np.frombuffer(reply[4 + length :], "<f4")

    text_reply, co2_reply = run(drive())
    expected_text, _ = text.step(tokens, text.initial_state(3))
    expected_co2, _ = co2.step([levels, calendar], co2.initial_state(3))
    np.testing.assert_allclose(values_of(text_reply), np.ravel(expected_text), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(values_of(co2_reply), np.ravel(expected_co2), rtol=1e-5, atol=1e-5)
