"""The Open Inference Protocol over HTTP, against a real server process, with real clients."""

from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
import pytest

import rnnstream
from tests.server.conftest import ServerProcess

SEED = rnnstream.load(rnnstream.demo.SEED_MODEL)
INFER = "/v2/models/seed/infer"


def body(x: np.ndarray, sequence_id: Any, **parameters: Any) -> dict[str, Any]:
    return {
        "inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": x.reshape(-1).tolist()}],
        "parameters": {"sequence_id": sequence_id, **parameters},
    }


def reference(xs: np.ndarray) -> np.ndarray:
    """One stream stepped in-process: outputs [T]."""
    ys, _ = SEED.run(xs[None], SEED.initial_state(1))
    return np.asarray(ys[0, :, 0])


def output(response: httpx.Response) -> float:
    assert response.status_code == 200, response.text
    return float(response.json()["outputs"][0]["data"][0])


def sid() -> str:
    return f"seq-{uuid.uuid4().hex[:10]}"


def test_server_and_model_endpoints(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url) as client:
        assert client.get("/v2").json()["name"] == "rnnstream"
        assert client.get("/v2/health/live").json() == {"live": True}
        assert client.get("/v2/health/ready").status_code == 200
        assert {m["name"] for m in client.get("/v2/models").json()["models"]} == {"seed", "identity"}
        assert {m["name"] for m in client.post("/v2/repository/index").json()} == {"seed", "identity"}
        for path in ("/v2/models/seed", "/v2/models/seed/versions/1"):
            meta = client.get(path).json()
            assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]
            assert meta["outputs"] == [{"name": "output", "datatype": "FP32", "shape": [-1, 1]}]
        assert client.get("/v2/models/seed/ready").json()["ready"] is True
        assert client.get("/v2/models/seed/versions/1/ready").status_code == 200
        assert client.get("/v2/models/nope").status_code == 404
        assert client.get("/v2/models/seed/versions/2").status_code == 404
        assert client.post("/v2/models/nope/infer", json=body(np.zeros(4), 1)).status_code == 404
        versioned = client.post("/v2/models/seed/versions/1/infer", json=body(np.zeros(4), sid(), sequence_start=True))
        assert versioned.status_code == 200 and versioned.json()["outputs"][0]["shape"] == [1, 1]
        assert client.post("/v2/models/seed/versions/2/infer", json=body(np.zeros(4), sid())).status_code == 404
        wrong_method = client.get(INFER)
        assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "POST"


def test_sequence_start_steps_and_end(server: ServerProcess) -> None:
    xs = np.random.default_rng(0).normal(0, 1, (5, 4)).astype(np.float32)
    expected, stream = reference(xs), sid()
    with httpx.Client(base_url=server.url) as client:
        for t in range(5):
            flags = {"sequence_start": t == 0, "sequence_end": t == 4}
            got = output(client.post(INFER, json=body(xs[t], stream, **flags)))
            assert got == pytest.approx(expected[t], abs=1e-6)
        after_end = client.post(INFER, json=body(xs[0], stream))
        assert after_end.status_code == 400 and "ended after step 5" in after_end.json()["error"]


def test_integer_sequence_ids_and_restart(server: ServerProcess) -> None:
    xs = np.random.default_rng(1).normal(0, 1, (2, 4)).astype(np.float32)
    expected = reference(xs)
    number = int(uuid.uuid4().int % 10**12) + 1
    with httpx.Client(base_url=server.url) as client:
        output(client.post(INFER, json=body(xs[0], number, sequence_start=True)))
        output(client.post(INFER, json=body(xs[1], number)))
        restarted = output(client.post(INFER, json=body(xs[0], number, sequence_start=True)))
        assert restarted == pytest.approx(expected[0], abs=1e-6)


def test_binary_tensors_both_ways(server: ServerProcess) -> None:
    x = np.random.default_rng(2).normal(0, 1, 4).astype(np.float32)
    header = json.dumps({
        "inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "parameters": {"binary_data_size": 16}}],
        "outputs": [{"name": "output", "parameters": {"binary_data": True}}],
        "parameters": {"sequence_id": sid(), "sequence_start": True},
    }).encode()
    response = httpx.post(server.url + INFER, content=header + x.tobytes(),
                          headers={"Inference-Header-Content-Length": str(len(header))})
    assert response.status_code == 200, response.text
    length = int(response.headers["Inference-Header-Content-Length"])
    meta = json.loads(response.content[:length])
    assert meta["outputs"][0]["parameters"]["binary_data_size"] == 4
    value = np.frombuffer(response.content[length:], "<f4")[0]
    assert value == pytest.approx(reference(x[None])[0], abs=1e-6)


def test_triton_client_unchanged(server: ServerProcess) -> None:
    tritonclient = pytest.importorskip("tritonclient.http")
    client = tritonclient.InferenceServerClient(server.url.removeprefix("http://"))
    assert client.is_server_ready() and client.is_model_ready("seed")
    xs = np.random.default_rng(3).normal(0, 1, (3, 4)).astype(np.float32)
    expected, sequence = reference(xs), int(uuid.uuid4().int % 10**9) + 1
    for t in range(3):
        x = tritonclient.InferInput("input", [1, 4], "FP32")
        x.set_data_from_numpy(xs[t : t + 1])  # binary by default, as Triton's client does
        result = client.infer("seed", [x], sequence_id=sequence, sequence_start=t == 0, sequence_end=t == 2,
                              outputs=[tritonclient.InferRequestedOutput("output")])
        assert result.as_numpy("output")[0, 0] == pytest.approx(expected[t], abs=1e-6)
    x = tritonclient.InferInput("input", [1, 4], "FP32")
    x.set_data_from_numpy(xs[:1])
    with pytest.raises(tritonclient.InferenceServerException, match="ended after step 3"):
        client.infer("seed", [x], sequence_id=sequence)


def test_retries_are_exactly_once_over_http(server: ServerProcess) -> None:
    xs = np.random.default_rng(4).normal(0, 1, (3, 4)).astype(np.float32)
    expected, stream = reference(xs), sid()
    with httpx.Client(base_url=server.url) as client:
        first = output(client.post(INFER, json=body(xs[0], stream, sequence_start=True, sequence_step=1)))
        again = output(client.post(INFER, json=body(xs[0], stream, sequence_start=True, sequence_step=1)))
        assert first == again == pytest.approx(expected[0], abs=1e-6)
        second = client.post(INFER, json=body(xs[1], stream, sequence_step=2))
        assert output(second) == pytest.approx(expected[1], abs=1e-6)
        assert second.json()["parameters"]["sequence_step"] == 2
        repeated = client.post(INFER, json=body(xs[1], stream, sequence_step=2))
        assert output(repeated) == pytest.approx(expected[1], abs=1e-6)
        skipped = client.post(INFER, json=body(xs[2], stream, sequence_step=5))
        assert skipped.status_code == 409 and skipped.json()["expected_step"] == 3
        third = client.post(INFER, json=body(xs[2], stream, sequence_step=3))
        assert output(third) == pytest.approx(expected[2], abs=1e-6)


def bad_bodies(stream: str) -> list[tuple[str, bytes, str]]:
    good = body(np.zeros(4), stream)

    def variant(**changes: Any) -> bytes:
        data = json.loads(json.dumps(good))
        data["inputs"][0].update(changes)
        return json.dumps(data).encode()

    no_id = json.loads(json.dumps(good))
    del no_id["parameters"]["sequence_id"]
    without_data = {k: v for k, v in good["inputs"][0].items() if k != "data"}
    return [
        ("invalid json", b"{not json", "not valid JSON"),
        ("no inputs", json.dumps({"parameters": {"sequence_id": stream}}).encode(), "field `inputs`"),
        ("wrong shape", variant(shape=[1, 5], data=[0.0] * 5), "shape [1, 5]"),
        ("data vs shape", variant(data=[0.0] * 3), "$.inputs[0].data has 3 values"),
        ("wrong datatype", variant(datatype="BYTES"), "Invalid enum value 'BYTES' - at `$.inputs[0].datatype`"),
        ("not numbers", variant(data=["a", "b", "c", "d"]), "Expected `float`, got `str` - at `$.inputs[0].data[0]`"),
        ("unknown input", variant(name="other"), "unknown ['other']"),
        ("missing data", variant(data=None), "got `null` - at `$.inputs[0].data`"),
        ("no data", json.dumps({**good, "inputs": [without_data]}).encode(), "neither 'data' nor"),
        ("no sequence id", json.dumps(no_id).encode(), "sequence_id"),
        ("bad flag", json.dumps({**good, "parameters": {"sequence_id": stream, "sequence_end": "yes"}}).encode(),
         "`$.parameters.sequence_end`"),
    ]


def test_malformed_requests_are_4xx_and_change_nothing(server: ServerProcess) -> None:
    stream = sid()
    x = np.random.default_rng(5).normal(0, 1, (2, 4)).astype(np.float32)
    expected = reference(x)
    with httpx.Client(base_url=server.url) as client:
        output(client.post(INFER, json=body(x[0], stream, sequence_start=True)))
        for case, content, message in bad_bodies(stream):
            response = client.post(INFER, content=content)
            assert response.status_code == 400, case
            assert message in response.json()["error"], (case, response.json())
        huge = client.post(INFER, content=b"[" + b"0," * 60_000 + b"0]")
        assert huge.status_code == 413 and "limit" in huge.json()["error"]
        assert output(client.post(INFER, json=body(x[1], stream))) == pytest.approx(expected[1], abs=1e-6)


def test_concurrent_streams_equal_in_process_runs(server: ServerProcess) -> None:
    streams, T = 24, 6
    xs = np.random.default_rng(7).normal(0, 1, (streams, T, 4)).astype(np.float32)
    ids = [sid() for _ in range(streams)]

    def drive(k: int) -> list[float]:
        with httpx.Client(base_url=server.url) as client:
            return [output(client.post(INFER, json=body(xs[k, t], ids[k], sequence_start=t == 0))) for t in range(T)]

    with ThreadPoolExecutor(max_workers=12) as pool:
        results = list(pool.map(drive, range(streams)))
    ys, _ = SEED.run(xs, SEED.initial_state(streams))
    np.testing.assert_allclose(np.array(results), ys[:, :, 0], rtol=1e-6, atol=1e-6)
    metrics = httpx.get(server.url + "/metrics").text
    assert "rnnstream_batch_size_bucket" in metrics and 'rnnstream_active_streams{model="seed"}' in metrics
    assert 'rnnstream_requests_total{code="200",model="seed",protocol="http"}' in metrics


def test_identity_model_is_served_too(server: ServerProcess) -> None:
    x = np.arange(4, dtype=np.float32)
    response = httpx.post(server.url + "/v2/models/identity/infer", json=body(x, sid(), sequence_start=True))
    assert response.json()["outputs"][0]["data"] == x.tolist()
