"""Generated hostile input against a real server: the invariants hold on every case.

Every HTTP request (OIP JSON and binary, generate, forecast) gets 200 or a JSON 4xx, never a 5xx; every
WebSocket message (JSON and binary) gets an answer. Meanwhile canary streams of three models step beside
the fuzzed requests (their batch-mates) and must equal an in-process replay at the end: no refused or
failed request may change them, or fail them.

``RNNSTREAM_FUZZ_SCALE`` multiplies the number of cases (``make soak`` runs 10×, with fresh seeds);
``RNNSTREAM_FUZZ_PRECISION`` serves the models at another precision (``make soak`` runs fp32 and int8), the
canaries' replays loaded at it too. At int8 a row's outputs depend on that row alone (its own scale), so the
canaries still equal a replay that steps them alone.
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import websockets.sync.client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rnnstream
from tests.server import fuzz_strategies as fuzz
from tests.server.conftest import ServerProcess

SCALE = int(os.environ.get("RNNSTREAM_FUZZ_SCALE", "1"))
SETTINGS = settings(deadline=None, derandomize=SCALE == 1, database=None,
                    suppress_health_check=list(HealthCheck))
RESULTS: Counter[tuple[str, str]] = Counter()
"""Cases by target and status (printed at the end of the module: ``pytest -s``)."""

PRECISION = os.environ.get("RNNSTREAM_FUZZ_PRECISION", "fp32")
SEED = rnnstream.load(rnnstream.demo.SEED_MODEL, precision=PRECISION)
TEXT = rnnstream.load(rnnstream.demo.TEXT_MODEL, precision=PRECISION)
CO2 = rnnstream.load(rnnstream.demo.CO2_MODEL, precision=PRECISION)


@pytest.fixture(scope="module")
def target() -> Iterator[ServerProcess]:
    """Every kind of model; small generation and forecast limits, so that fuzzed work stays cheap."""
    process = ServerProcess("seed", "builtin:identity", "text", "co2", "--max-tokens", "16", "--max-prompt-tokens",
                            "64", "--max-forecast-steps", "5000", "--max-generations", "8", "--timeout", "20",
                            "--precision", PRECISION).start()
    yield process
    process.stop()


class Canaries:
    """Streams of seed, text and co2 stepped over HTTP (with step numbers) while the fuzzing runs."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.rng = np.random.default_rng(17)
        self.sent: dict[str, list[Any]] = {}
        self.got: dict[str, list[np.ndarray]] = {}
        self.failures: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def body(self, model: str, x: Any, stream: str, t: int) -> dict[str, Any]:
        if model == "seed":
            inputs = [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": x.tolist()}]
        elif model == "text":
            inputs = [{"name": "chars", "shape": [1], "datatype": "INT64", "data": [int(x)]}]
        else:
            inputs = [{"name": "co2", "shape": [1, 1], "datatype": "FP32", "data": x[:1].tolist()},
                      {"name": "calendar", "shape": [1, 2], "datatype": "FP32", "data": x[1:].tolist()}]
        return {"inputs": inputs, "parameters": {"sequence_id": stream, "sequence_start": t == 0,
                                                 "sequence_step": t + 1}}

    def run(self) -> None:
        streams = [(model, f"canary-{model}-{k}") for model in ("seed", "text", "co2") for k in range(2)]
        with httpx.Client(base_url=self.url, timeout=30) as client:
            t = 0
            while not self.stop.is_set():
                for model, stream in streams:
                    x: Any = int(self.rng.integers(1, 70)) if model == "text" else \
                        self.rng.normal(0, 1, 4 if model == "seed" else 3).astype(np.float32)
                    for _ in range(5):  # a 503/504 is retryable: the same step again
                        response = client.post(f"/v2/models/{model}/infer", json=self.body(model, x, stream, t))
                        if response.status_code not in (503, 504):
                            break
                    if response.status_code != 200:
                        self.failures.append(f"{stream} step {t + 1}: {response.status_code} {response.text}")
                        return
                    self.sent.setdefault(stream, []).append(x)
                    self.got.setdefault(stream, []).append(np.asarray(response.json()["outputs"][0]["data"]))
                t += 1
                time.sleep(0.01)

    def verify(self) -> int:
        """Compare every canary's outputs with an in-process replay; returns the steps compared."""
        assert not self.failures, self.failures
        compared = 0
        for stream, xs in self.sent.items():
            if stream.startswith("canary-seed"):
                ys, _ = SEED.run(np.stack(xs)[None], SEED.initial_state(1))
            elif stream.startswith("canary-text"):
                ys, _ = TEXT.run(np.array(xs, np.int64)[None], TEXT.initial_state(1))
            else:
                values = np.stack(xs)[None]
                ys, _ = CO2.run([values[..., :1], values[..., 1:]], CO2.initial_state(1))
            np.testing.assert_allclose(np.stack(self.got[stream]), np.asarray(ys)[0].reshape(len(xs), -1),
                                       rtol=1e-5, atol=1e-5, err_msg=stream)
            compared += len(xs)
        return compared


@pytest.fixture(scope="module")
def canaries(target: ServerProcess) -> Iterator[Canaries]:
    running = Canaries(target.url)
    running.thread.start()
    yield running
    running.stop.set()
    running.thread.join()


def check(kind: str, response: httpx.Response) -> None:
    """200, or a 4xx whose JSON body says what was wrong."""
    RESULTS[(kind, str(response.status_code))] += 1
    assert response.status_code < 500, (kind, response.status_code, response.text)
    if response.status_code >= 400:
        assert response.headers["content-type"].startswith("application/json"), response.text
        assert response.json()["error"], response.text


@given(st.one_of(fuzz.valid_infer_request(), fuzz.infer_request(), fuzz.infer_request()))
@settings(SETTINGS, max_examples=600 * SCALE)
def test_oip_json(target: ServerProcess, canaries: Canaries, case: tuple[str, dict[str, Any]]) -> None:
    model, body = case
    path = f"/v2/models/{urllib.parse.quote(model, safe='/')}/infer"
    check("OIP JSON", httpx.post(target.url + path, content=json.dumps(body).encode()))


@given(fuzz.binary_infer_request())
@settings(SETTINGS, max_examples=300 * SCALE)
def test_oip_binary(target: ServerProcess, canaries: Canaries, case: tuple[str, bytes, bytes]) -> None:
    model, body, length = case
    check("OIP binary", httpx.post(f"{target.url}/v2/models/{model}/infer", content=body,
                                   headers={"Inference-Header-Content-Length": length}))


@given(st.one_of(fuzz.valid_generate_request(), fuzz.generate_request(), fuzz.generate_request()))
@settings(SETTINGS, max_examples=150 * SCALE)
def test_generate(target: ServerProcess, canaries: Canaries, body: dict[str, Any]) -> None:
    check("generate", httpx.post(f"{target.url}/v2/models/text/generate", json=body, timeout=30))


@given(st.one_of(fuzz.valid_generate_request(), fuzz.generate_request(), fuzz.generate_request()))
@settings(SETTINGS, max_examples=150 * SCALE)
def test_generate_stream(target: ServerProcess, canaries: Canaries, body: dict[str, Any]) -> None:
    with httpx.stream("POST", f"{target.url}/v2/models/text/generate_stream", json=body, timeout=30) as response:
        response.read()
    check("generate_stream", response)
    if response.status_code == 200:
        events = [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: ")]
        assert events and events[-1]["finish_reason"] in ("stop", "length"), events[-1:]


@given(st.one_of(fuzz.valid_forecast_request(), fuzz.forecast_request(), fuzz.forecast_request()))
@settings(SETTINGS, max_examples=300 * SCALE)
def test_forecast(target: ServerProcess, canaries: Canaries, case: tuple[str, dict[str, Any]]) -> None:
    model, body = case
    check("forecast", httpx.post(f"{target.url}/v2/models/{model}/forecast", content=json.dumps(body).encode()))


@pytest.fixture(scope="module")
def socket(target: ServerProcess) -> Iterator[Any]:
    with websockets.sync.client.connect(target.url.replace("http://", "ws://") + "/v2/stream") as connection:
        yield connection


def answered(kind: str, reply: str | bytes) -> None:
    """A WebSocket reply: JSON errors carry a 4xx code; binary replies carry their responses' codes."""
    if isinstance(reply, bytes):
        head = json.loads(reply[4 : 4 + int.from_bytes(reply[:4], "little")])
    else:
        head = json.loads(reply)
    entries = head.get("responses", [head])
    for entry in entries:
        code = str(entry.get("code", 200))
        RESULTS[(kind, code)] += 1
        assert int(code) < 500, (kind, entry)
        assert int(code) == 200 or entry["error"], entry
    if not entries:
        RESULTS[(kind, "no requests")] += 1


@given(st.one_of(fuzz.valid_stream_message(), fuzz.stream_message(), fuzz.stream_message()))
@settings(SETTINGS, max_examples=500 * SCALE)
def test_websocket_json(canaries: Canaries, socket: Any, message: str) -> None:
    socket.send(message)
    answered("WebSocket JSON", socket.recv(timeout=30))


@given(fuzz.stream_frame())
@settings(SETTINGS, max_examples=300 * SCALE)
def test_websocket_binary(canaries: Canaries, socket: Any, frame: bytes) -> None:
    socket.send(frame)
    answered("WebSocket binary", socket.recv(timeout=30))


def test_canaries_equal_in_process_replays(target: ServerProcess, canaries: Canaries) -> None:
    """Last: the canaries stepped beside every case above; no case changed or failed them."""
    canaries.stop.set()
    canaries.thread.join()
    compared = canaries.verify()
    assert compared >= 60
    metrics = httpx.get(target.url + "/metrics").text
    assert len(metrics) < 200_000  # no fuzzed name became a label
    print(f"\nfuzz cases by target and status ({compared} canary steps equal their replay):")
    for kind in sorted({k for k, _ in RESULTS}):
        counts = {code: n for (k, code), n in sorted(RESULTS.items()) if k == kind}
        print(f"  {kind:<18} {sum(counts.values()):>6}  {counts}")
