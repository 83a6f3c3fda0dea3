"""History priming against a real server: a request of T steps ([1, T, *features]; a WebSocket request's
``steps``) equals T single steps over HTTP (JSON and binary), WebSocket (JSON and binary frames) and gRPC;
it is exactly-once, bounded by ``max_prime_steps``, and fails alone."""

from __future__ import annotations

import asyncio
import json
import os
import struct
import uuid
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import websockets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient.utils import InferenceServerException

import rnnstream
from rnnstream import Streams
from tests.server.conftest import ServerProcess

SCALE = int(os.environ.get("RNNSTREAM_FUZZ_SCALE", "1"))
"""``make soak`` runs ten times the cases of the interleaving test, with fresh seeds."""

SEED = rnnstream.load(rnnstream.demo.SEED_MODEL)
TEXT = rnnstream.load(rnnstream.demo.TEXT_MODEL)
LIMIT = 64
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def primed() -> Any:
    """The bundled models (seed, text, co2) with a small max_prime_steps."""
    process = ServerProcess("--max-prime-steps", str(LIMIT)).start()
    yield process
    process.stop()


def sid() -> str:
    return f"prime-{uuid.uuid4().hex[:10]}"


def infer(url: str, xs: np.ndarray, sequence_id: str, *, binary: bool = False, history: bool = True,
          model: str = "seed", **parameters: Any) -> httpx.Response:
    """One infer request: ``xs [T, *features]`` as a history ([1, T, ...]), or one step ``xs [*features]``."""
    shape = [1, *xs.shape]
    datatype = "INT64" if model == "text" else "FP32"
    name = "chars" if model == "text" else "input"
    entry: dict[str, Any] = {"name": name, "shape": shape, "datatype": datatype}
    body: dict[str, Any] = {"inputs": [entry], "parameters": {"sequence_id": sequence_id, **parameters}}
    if not binary:
        entry["data"] = xs.reshape(-1).tolist()
        return httpx.post(f"{url}/v2/models/{model}/infer", json=body, timeout=30)
    values = xs.astype("<i8" if model == "text" else "<f4").tobytes()
    entry["parameters"] = {"binary_data_size": len(values)}
    head = json.dumps(body).encode()
    return httpx.post(f"{url}/v2/models/{model}/infer", content=head + values, timeout=30,
                      headers={"Inference-Header-Content-Length": str(len(head))})


def outputs(response: httpx.Response) -> np.ndarray:
    """The outputs of a 200 reply (JSON or binary), in their shape."""
    assert response.status_code == 200, response.text
    length = response.headers.get("inference-header-content-length")
    head = response.json() if length is None else json.loads(response.content[: int(length)])
    (output,) = head["outputs"]
    if length is None:
        return np.array(output["data"], np.float32).reshape(output["shape"])
    return np.frombuffer(response.content[int(length) :], "<f4").reshape(output["shape"])


def singles(url: str, xs: np.ndarray, sequence_id: str, first: int = 1) -> np.ndarray:
    """``xs`` as single-step requests numbered from ``first``: every step's outputs ``[T, 1]``."""
    return np.stack([outputs(infer(url, x, sequence_id, history=False, sequence_start=first + t == 1,
                                   sequence_step=first + t))[0] for t, x in enumerate(xs)])


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("T", [1, 7, 50])
def test_http_histories_equal_single_steps(primed: ServerProcess, T: int, binary: bool) -> None:
    rng = np.random.default_rng(T)
    warm, xs, more = (rng.normal(0, 1, (n, 4)).astype(np.float32) for n in (3, T, T))
    history, stepped = sid(), sid()
    singles(primed.url, warm, history)
    expected = singles(primed.url, np.concatenate([warm, xs, more]), stepped)[3:]
    everything = outputs(infer(primed.url, xs, history, binary=binary, sequence_step=4, sequence_outputs="all"))
    assert everything.shape == (1, T, 1)
    np.testing.assert_allclose(everything[0], expected[:T], atol=TOLERANCE)
    last = outputs(infer(primed.url, more, history, binary=binary, sequence_step=4 + T))
    assert last.shape == (1, 1)
    np.testing.assert_allclose(last[0], expected[-1], atol=TOLERANCE)
    after = rng.normal(0, 1, 4).astype(np.float32)  # the states agree: the next single step is the same
    np.testing.assert_allclose(singles(primed.url, after[None], history, 4 + 2 * T),
                               singles(primed.url, after[None], stepped, 4 + 2 * T), atol=TOLERANCE)


def test_http_token_ids(primed: ServerProcess) -> None:
    tokens = np.random.default_rng(5).integers(0, 76, 20)
    reply = outputs(infer(primed.url, tokens, sid(), model="text", sequence_start=True, sequence_outputs="all"))
    expected, _ = TEXT.run(tokens[None], TEXT.initial_state(1))
    np.testing.assert_allclose(reply, expected, atol=TOLERANCE)


def test_exactly_once_over_http(primed: ServerProcess) -> None:
    xs = np.random.default_rng(9).normal(0, 1, (10, 4)).astype(np.float32)
    stream = sid()
    first = infer(primed.url, xs, stream, sequence_start=True, sequence_step=1, sequence_outputs="all")
    again = infer(primed.url, xs, stream, sequence_start=True, sequence_step=1, sequence_outputs="all")
    np.testing.assert_array_equal(outputs(again), outputs(first))
    assert first.json()["parameters"]["sequence_step"] == 1
    overlap = infer(primed.url, xs[:3], stream, sequence_step=9)  # steps 9..11: not the next, not a resend
    assert overlap.status_code == 409 and overlap.json()["expected_step"] == 11
    ended = infer(primed.url, xs[:4], stream, sequence_step=11, sequence_end=True)
    np.testing.assert_array_equal(outputs(infer(primed.url, xs[:4], stream, sequence_step=11, sequence_end=True)),
                                  outputs(ended))
    gone = infer(primed.url, xs[:2], stream, sequence_step=15)
    assert gone.status_code == 400, gone.text  # the stream ended with step 14
    ys, _ = SEED.run(np.concatenate([xs, xs[:4]])[None], SEED.initial_state(1))
    np.testing.assert_allclose(outputs(ended)[0], ys[0, -1], atol=TOLERANCE)


def test_limits_and_malformed_histories(primed: ServerProcess) -> None:
    stream = sid()
    past = infer(primed.url, np.zeros((LIMIT + 1, 4), np.float32), stream, sequence_start=True)
    assert past.status_code == 400 and past.json()["limit"] == {"name": "max_prime_steps", "value": LIMIT + 1,
                                                                 "limit": LIMIT}
    assert infer(primed.url, np.zeros((LIMIT, 4), np.float32), stream, sequence_start=True).status_code == 200
    empty = infer(primed.url, np.zeros((0, 4), np.float32), stream)
    assert empty.status_code == 400 and "no steps" in empty.json()["error"]
    rank = infer(primed.url, np.zeros((2, 2, 4), np.float32), stream)
    assert rank.status_code == 400 and "[1, T, 4]" in rank.json()["error"]
    nan = np.zeros((3, 4), np.float32)
    nan[1, 2] = np.nan
    assert "non-finite" in infer(primed.url, nan, stream, binary=True).json()["error"]
    wrong = infer(primed.url, np.zeros((3, 4), np.float32), stream, sequence_outputs="every")
    assert wrong.status_code == 400 and "sequence_outputs" in wrong.json()["error"]
    mixed = {"inputs": [{"name": "co2", "shape": [1, 3, 1], "datatype": "FP32", "data": [1.0, 2.0, 3.0]},
                        {"name": "calendar", "shape": [1, 2], "datatype": "FP32", "data": [0.0, 1.0]}],
             "parameters": {"sequence_id": stream, "sequence_start": True}}
    reply = httpx.post(f"{primed.url}/v2/models/co2/infer", json=mixed)
    assert reply.status_code == 400 and "same steps" in reply.json()["error"]
    assert outputs(infer(primed.url, np.zeros((1, 4), np.float32), stream)).shape == (1, 1)  # unchanged: step 65


async def websocket(url: str, messages: list[str | bytes]) -> list[Any]:
    async with websockets.connect(url.replace("http://", "ws://") + "/v2/stream") as socket:
        replies = []
        for message in messages:
            await socket.send(message)
            replies.append(await socket.recv())
        return replies


def test_websocket_json_and_binary(primed: ServerProcess) -> None:
    rng = np.random.default_rng(11)
    xs, ys = rng.normal(0, 1, (7, 4)).astype(np.float32), rng.normal(0, 1, (5, 4)).astype(np.float32)
    streams = [sid() for _ in range(3)]
    text = json.dumps({"model": "seed", "sequence_id": streams[0], "sequence_start": True, "steps": 7,
                       "sequence_outputs": "all", "inputs": xs.tolist()})
    header = json.dumps({"model": "seed", "requests": [
        {"id": 0, "sequence_id": streams[1], "sequence_start": True, "steps": 7, "sequence_outputs": "all"},
        {"id": 1, "sequence_id": streams[2], "sequence_start": True},
        {"id": 2, "sequence_id": streams[0], "steps": 5}]}).encode()
    frame = struct.pack("<I", len(header)) + header + xs.tobytes() + ys[0].tobytes() + ys.tobytes()
    over = json.dumps({"model": "seed", "sequence_id": sid(), "steps": LIMIT + 1,
                       "inputs": np.zeros((LIMIT + 1) * 4).tolist()})
    short = json.dumps({"model": "seed", "sequence_id": sid(), "steps": 3, "inputs": [0.0] * 8})
    json_reply, binary_reply, over_reply, short_reply = asyncio.run(websocket(primed.url, [text, frame, over, short]))
    reference, _ = SEED.run(np.concatenate([xs, ys])[None], SEED.initial_state(1))
    np.testing.assert_allclose(json.loads(json_reply)["outputs"]["output"], reference[0, :7, 0], atol=TOLERANCE)
    (length,) = struct.unpack_from("<I", binary_reply)
    assert [r["id"] for r in json.loads(binary_reply[4 : 4 + length])["responses"]] == [0, 1, 2]
    values = np.frombuffer(binary_reply[4 + length :], "<f4")
    assert values.shape == (7 + 1 + 1,)
    np.testing.assert_allclose(values[:7], reference[0, :7, 0], atol=TOLERANCE)  # a fresh stream: the same as 0
    np.testing.assert_allclose(values[7], SEED.step(ys[:1], SEED.initial_state(1))[0][0, 0], atol=TOLERANCE)
    np.testing.assert_allclose(values[8], reference[0, -1, 0], atol=TOLERANCE)
    over_answer, short_answer = json.loads(over_reply), json.loads(short_reply)
    assert over_answer["code"] == 400 and over_answer["limit"]["name"] == "max_prime_steps"
    assert short_answer["code"] == 400 and "3 steps" in short_answer["error"]


def test_a_bad_history_fails_alone(primed: ServerProcess) -> None:
    """A history refused in its batch (a NaN) fails only itself: its batch-mates in the same frame step."""
    rng = np.random.default_rng(12)
    good, nan = rng.normal(0, 1, (4, 4)).astype(np.float32), np.full((6, 4), np.nan, np.float32)
    streams = [sid() for _ in range(4)]
    header = json.dumps({"model": "seed", "requests": [
        {"sequence_id": streams[0], "sequence_start": True},
        {"sequence_id": streams[1], "sequence_start": True, "steps": 6},
        {"sequence_id": streams[2], "sequence_start": True, "steps": 4, "sequence_outputs": "all"},
        {"sequence_id": streams[3], "sequence_start": True}]}).encode()
    values = good[0].tobytes() + nan.tobytes() + good.tobytes() + good[1].tobytes()
    (reply,) = asyncio.run(websocket(primed.url, [struct.pack("<I", len(header)) + header + values]))
    (length,) = struct.unpack_from("<I", reply)
    answers = json.loads(reply[4 : 4 + length])["responses"]
    assert ["error" in a for a in answers] == [False, True, False, False], answers
    assert answers[1]["code"] == 400 and "non-finite" in answers[1]["error"]
    got = np.frombuffer(reply[4 + length :], "<f4")
    expected, _ = SEED.run(good[None], SEED.initial_state(1))
    firsts, _ = SEED.step(good[:2], SEED.initial_state(2))
    np.testing.assert_allclose(got, [firsts[0, 0], *expected[0, :, 0], firsts[1, 0]], atol=TOLERANCE)


def test_grpc_last_and_all(primed: ServerProcess) -> None:
    client = grpcclient.InferenceServerClient(primed.grpc_url)
    for T in (1, 7, 50):
        xs = np.random.default_rng(20 + T).normal(0, 1, (1, T, 4)).astype(np.float32)
        expected, _ = SEED.run(xs, SEED.initial_state(1))
        tensor = grpcclient.InferInput("input", [1, T, 4], "FP32")
        tensor.set_data_from_numpy(xs)
        stream = sid()
        everything = client.infer("seed", [tensor], sequence_id=stream, sequence_start=True,
                                  parameters={"sequence_step": 1, "sequence_outputs": "all"}).as_numpy("output")
        np.testing.assert_allclose(everything, expected, atol=TOLERANCE)
        resent = client.infer("seed", [tensor], sequence_id=stream, sequence_start=True,
                              parameters={"sequence_step": 1, "sequence_outputs": "all"}).as_numpy("output")
        np.testing.assert_array_equal(resent, everything)
        last = client.infer("seed", [tensor], sequence_id=sid(), sequence_start=True).as_numpy("output")
        np.testing.assert_allclose(last, expected[:, -1], atol=TOLERANCE)
    tensor = grpcclient.InferInput("input", [1, LIMIT + 1, 4], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, LIMIT + 1, 4), np.float32))
    with pytest.raises(InferenceServerException, match="max_prime_steps"):
        client.infer("seed", [tensor], sequence_id=sid(), sequence_start=True)


Operation = tuple[int, int | None, bool, bool]
"""(stream, T or None for a single step, every step's outputs, binary)."""


@given(st.lists(st.tuples(st.integers(0, 2), st.sampled_from([None, None, 1, 2, 5]), st.booleans(), st.booleans()),
                min_size=1, max_size=8), st.integers(0, 2**32 - 1))
@settings(deadline=None, max_examples=25 * SCALE, derandomize=SCALE == 1, database=None,
          suppress_health_check=list(HealthCheck))
def test_generated_interleavings_equal_an_in_process_replay(
    primed: ServerProcess, operations: list[Operation], seed: int
) -> None:
    rng = np.random.default_rng(seed)
    replay, applied = Streams(SEED), [0, 0, 0]
    ids = [sid() for _ in range(3)]
    for k, T, everything, binary in operations:
        xs = rng.normal(0, 1, (T or 1, 4)).astype(np.float32)
        reply = outputs(infer(primed.url, xs if T else xs[0], ids[k], binary=binary, history=T is not None,
                              sequence_start=applied[k] == 0, sequence_step=applied[k] + 1,
                              sequence_outputs="all" if everything else "last"))
        expected = np.stack([replay.step({ids[k]: x})[ids[k]] for x in xs])  # (T, 1)
        applied[k] += len(xs)
        want = expected[None] if T is not None and everything else expected[-1:]
        np.testing.assert_allclose(reply, want, atol=TOLERANCE)
