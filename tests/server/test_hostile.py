"""One test per defect a hostile-client trial found (issue #17), against a real server with real clients.

Each of these failed on the server before the reliability work: a request that hurt other requests, a
refused request that changed state, a 500 or an unanswered message for something a client can send.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import websockets

import rnnstream
from tests.redis_server import RedisServer
from tests.server.conftest import ServerProcess

SEED = rnnstream.load(rnnstream.demo.SEED_MODEL)
TEXT = rnnstream.load(rnnstream.demo.TEXT_MODEL)
INFER = "/v2/models/seed/infer"


@pytest.fixture(scope="module")
def hostile() -> Iterator[ServerProcess]:
    """Every kind of model (values, tokens, a forecaster), default limits, 20,000-token generations."""
    process = ServerProcess("seed", "builtin:identity", "text", "co2", "--max-tokens", "20000").start()
    yield process
    process.stop()


def sid() -> str:
    return f"h-{uuid.uuid4().hex[:10]}"


def seed_body(x: Any, sequence_id: str, datatype: str = "FP32", **parameters: Any) -> dict[str, Any]:
    return {"inputs": [{"name": "input", "shape": [1, 4], "datatype": datatype, "data": x}],
            "parameters": {"sequence_id": sequence_id, **parameters}}


def text_body(token: Any, sequence_id: str, datatype: str = "INT64", **parameters: Any) -> dict[str, Any]:
    return {"inputs": [{"name": TEXT.inputs[0].name, "shape": [1], "datatype": datatype, "data": [token]}],
            "parameters": {"sequence_id": sequence_id, **parameters}}


def reference(xs: np.ndarray) -> np.ndarray:
    ys, _ = SEED.run(np.asarray(xs, np.float32)[None], SEED.initial_state(1))
    return np.asarray(ys[0, :, 0])


def assert_json_4xx(response: httpx.Response, *words: str) -> dict[str, Any]:
    """A JSON error with a 4xx status whose message holds each of ``words``."""
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.text
    body = response.json()
    for word in words:
        assert word in body["error"], (word, body)
    return body


def output(response: httpx.Response) -> float:
    assert response.status_code == 200, response.text
    return float(response.json()["outputs"][0]["data"][0])


# -- 1. a bad sampling parameter cut every concurrent generation ------------------------------------


def test_a_huge_top_k_is_refused_and_cuts_no_other_generation(hostile: ServerProcess) -> None:
    body = {"text_input": "ROMEO.\n", "parameters": {"max_tokens": 600, "temperature": 0.8, "seed": 1}}
    finishes: list[str | None] = []
    counts: list[int] = []

    def generate() -> None:
        with httpx.Client(base_url=hostile.url, timeout=60) as client, \
                client.stream("POST", "/v2/models/text/generate_stream", json=body) as response:
            events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]
        counts.append(len(events))
        finishes.append(events[-1]["finish_reason"])

    threads = [threading.Thread(target=generate) for _ in range(6)]
    for thread in threads:
        thread.start()
    time.sleep(0.2)
    bad = {"text_input": "KING.\n", "parameters": {"max_tokens": 10, "top_k": 2**63}}
    refused = httpx.post(hostile.url + "/v2/models/text/generate_stream", json=bad)
    assert_json_4xx(refused, "top_k")
    for thread in threads:
        thread.join()
    assert counts == [600] * 6 and finishes == ["length"] * 6


# -- 2. a malformed token request failed its batch-mates ---------------------------------------------


def test_a_float_sent_to_a_token_model_fails_alone(hostile: ServerProcess) -> None:
    def valid(k: int) -> int:
        stream, failures = sid(), 0
        with httpx.Client(base_url=hostile.url) as client:
            for t in range(15):
                response = client.post("/v2/models/text/infer", json=text_body(k % 60 + 1, stream,
                                                                               sequence_start=t == 0))
                failures += response.status_code != 200
        return failures

    def invalid(k: int) -> list[int]:
        with httpx.Client(base_url=hostile.url) as client:
            return [client.post("/v2/models/text/infer", json=text_body(1.5, sid(), "FP32",
                                                                        sequence_start=True)).status_code
                    for _ in range(15)]

    with ThreadPoolExecutor(24) as pool:
        bad = [pool.submit(invalid, k) for k in range(4)]
        good = list(pool.map(valid, range(40)))
    assert sum(good) == 0
    assert {code for future in bad for code in future.result()} == {400}


# -- 3. exactly-once had gaps ------------------------------------------------------------------------


def test_a_late_duplicate_of_a_start_step_changes_nothing(hostile: ServerProcess) -> None:
    xs = np.random.default_rng(3).normal(0, 1, (3, 4)).astype(np.float32)
    expected, stream = reference(xs), sid()
    with httpx.Client(base_url=hostile.url) as client:
        first = output(client.post(INFER, json=seed_body(xs[0].tolist(), stream, sequence_start=True,
                                                         sequence_step=1)))
        retried = client.post(INFER, json=seed_body(xs[0].tolist(), stream, sequence_start=True, sequence_step=1))
        assert output(retried) == first  # a retry of the start: its stored output
        output(client.post(INFER, json=seed_body(xs[1].tolist(), stream, sequence_step=2)))
        late = client.post(INFER, json=seed_body(xs[0].tolist(), stream, sequence_start=True, sequence_step=1))
        assert late.status_code == 409 and late.json()["expected_step"] == 3, late.text
        third = output(client.post(INFER, json=seed_body(xs[2].tolist(), stream, sequence_step=3)))
    assert third == pytest.approx(expected[2], abs=1e-6)  # the late start reset nothing


def test_a_retried_end_step_gets_its_stored_output(hostile: ServerProcess) -> None:
    xs = np.random.default_rng(4).normal(0, 1, (2, 4)).astype(np.float32)
    stream = sid()
    with httpx.Client(base_url=hostile.url) as client:
        output(client.post(INFER, json=seed_body(xs[0].tolist(), stream, sequence_start=True, sequence_step=1)))
        ended = output(client.post(INFER, json=seed_body(xs[1].tolist(), stream, sequence_end=True,
                                                         sequence_step=2)))
        retried = client.post(INFER, json=seed_body(xs[1].tolist(), stream, sequence_end=True, sequence_step=2))
        assert output(retried) == ended
        after = client.post(INFER, json=seed_body(xs[1].tolist(), stream, sequence_step=3))
        assert_json_4xx(after, "ended")


def test_a_request_naming_an_unknown_output_steps_nothing(hostile: ServerProcess) -> None:
    xs = np.random.default_rng(5).normal(0, 1, (2, 4)).astype(np.float32)
    expected, stream = reference(xs), sid()
    with httpx.Client(base_url=hostile.url) as client:
        output(client.post(INFER, json=seed_body(xs[0].tolist(), stream, sequence_start=True)))
        refused = client.post(INFER, json={**seed_body(xs[1].tolist(), stream), "outputs": [{"name": "nope"}]})
        assert_json_4xx(refused, "nope")
        second = output(client.post(INFER, json=seed_body(xs[1].tolist(), stream)))
    assert second == pytest.approx(expected[1], abs=1e-6)


# -- 4. malformed requests answered 500 --------------------------------------------------------------


MALFORMED: list[tuple[str, dict[str, Any], str]] = [
    ("an unhashable datatype", seed_body([0, 0, 0, 0], "m", datatype=["FP32"]), "datatype"),  # type: ignore[arg-type]
    ("INT64 2**63", text_body(2**63, "m"), "data"),
    ("UINT8 300", text_body(300, "m", "UINT8"), "data"),
    ("UINT8 -1", text_body(-1, "m", "UINT8"), "data"),
    ("parameters that are a list", {**seed_body([0, 0, 0, 0], "m"), "parameters": [1]}, "parameters"),
    ("input parameters that are a list",
     {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [0, 0, 0, 0], "parameters": [1]}],
      "parameters": {"sequence_id": "m", "sequence_start": True}}, "parameters"),
    ("strings as FP32 data", seed_body(["a", "b", "c", "d"], "m", sequence_start=True), "data"),
    ("a float as INT64 data", text_body(1.5, "m", sequence_start=True), "data"),
]


@pytest.mark.parametrize(("case", "body", "field"), MALFORMED, ids=[case for case, _, _ in MALFORMED])
def test_malformed_infer_requests_are_400_naming_the_field(
        hostile: ServerProcess, case: str, body: dict[str, Any], field: str) -> None:
    model = "seed" if body["inputs"][0]["name"] == "input" else "text"
    assert_json_4xx(httpx.post(f"{hostile.url}/v2/models/{model}/infer", json=body), field)


def test_a_non_ascii_header_length_is_400(hostile: ServerProcess) -> None:
    response = httpx.post(hostile.url + INFER, content=json.dumps(seed_body([0, 0, 0, 0], sid())).encode(),
                          headers={"Inference-Header-Content-Length": "١٢".encode()})
    assert_json_4xx(response, "Inference-Header-Content-Length")


@pytest.mark.parametrize("extra", [
    {"feedback": {"co2": "x"}}, {"feedback": {"co2": [0, 1, 2]}}, {"feedback": {"co2": {"a": 0}}},
    {"exogenous": {"calendar": "x"}}, {"exogenous": {"calendar": [[1, 2, 3]]}}, {"exogenous": [1, 2]},
    {"exogenous": {"calendar": [["a", "b"]]}}, {"noise": [0.1, 0.2]},
])
def test_malformed_forecasts_are_400(hostile: ServerProcess, extra: dict[str, Any]) -> None:
    stream = sid()
    with httpx.Client(base_url=hostile.url) as client:
        step = {"inputs": [{"name": "co2", "shape": [1, 1], "datatype": "FP32", "data": [316.0]},
                           {"name": "calendar", "shape": [1, 2], "datatype": "FP32", "data": [1.0, 0.0]}],
                "parameters": {"sequence_id": stream, "sequence_start": True}}
        assert client.post("/v2/models/co2/infer", json=step).status_code == 200
        body = {"sequence_id": stream, "horizon": 3, "exogenous": {"calendar": [[1.0, 0.0]] * 3}, **extra}
        assert_json_4xx(client.post("/v2/models/co2/forecast", json=body))


# -- 5. WebSocket messages left unanswered -----------------------------------------------------------


def test_every_websocket_message_is_answered(hostile: ServerProcess) -> None:
    messages = [
        {"model": "seed", "sequence_id": "w1", "sequence_start": True, "inputs": ["a", "b", "c", "d"]},
        {"model": "text", "sequence_id": "w2", "sequence_start": True, "inputs": [2**70]},
        {"model": "text", "sequence_id": "w3", "sequence_start": True, "inputs": [1.5]},
        {"model": "seed", "sequence_id": "w4", "sequence_start": True, "inputs": [[1, 2], [3]]},
        {"model": "seed", "sequence_id": "w5", "sequence_start": True, "inputs": {"input": None}},
        {"model": ["seed"], "sequence_id": "w6", "inputs": [0, 0, 0, 0]},
        {"requests": [{"model": "seed", "sequence_id": "w7", "sequence_start": True, "inputs": [1e39, 0, 0, 0]}]},
    ]

    async def talk() -> list[dict[str, Any]]:
        url = hostile.url.replace("http://", "ws://") + "/v2/stream"
        async with websockets.connect(url) as socket:
            replies = []
            for message in messages:
                await socket.send(json.dumps(message))
                replies.append(json.loads(await asyncio.wait_for(socket.recv(), 10)))
            return replies

    for reply in asyncio.run(talk()):
        entry = reply["responses"][0] if "responses" in reply else reply
        assert 400 <= entry["code"] < 500 and entry["error"], reply


# -- 6. metrics that an attacker could write into ----------------------------------------------------


def test_unknown_model_names_cannot_write_into_metrics(hostile: ServerProcess) -> None:
    evil = 'x"} 1\nrnnstream_injected_total{a="'

    async def over_websocket() -> dict[str, Any]:
        async with websockets.connect(hostile.url.replace("http://", "ws://") + "/v2/stream") as socket:
            await socket.send(json.dumps({"model": evil, "sequence_id": "e", "inputs": [0, 0, 0, 0]}))
            return dict(json.loads(await socket.recv()))

    assert asyncio.run(over_websocket())["code"] == 404
    with httpx.Client(base_url=hostile.url) as client:
        quoted = "".join(f"%{b:02X}" for b in evil.encode())  # a newline cannot travel in a URL unquoted
        assert client.post(f"/v2/models/{quoted}/infer", json=seed_body([0] * 4, "e")).status_code == 404
        before = len(client.get("/metrics").text)
        for k in range(300):
            assert client.post(f"/v2/models/m{k}-{uuid.uuid4().hex}/infer", json={}).status_code == 404
        text = client.get("/metrics").text
    assert "rnnstream_injected_total" not in text
    assert len(text) - before < 2000  # unknown names share one label: the page does not grow with them


# -- 7. small requests that cost gigabytes or stalled everyone ----------------------------------------


@pytest.mark.parametrize(("extra", "limit"), [
    ({"horizon": 1, "paths": 499_999, "noise": 0.1}, "max_forecast_paths"),
    ({"horizon": 100_000, "quantiles": [k / 100 for k in range(1, 100)]}, "max_forecast_values"),
])
def test_forecasts_past_their_limits_are_refused_by_name(hostile: ServerProcess, extra: dict[str, Any],
                                                         limit: str) -> None:
    body = {"sequence_id": "anything", **extra}
    refused = assert_json_4xx(httpx.post(hostile.url + "/v2/models/seed/forecast", json=body), limit)
    assert refused["limit"]["name"] == limit


def test_a_prompt_past_its_limit_is_refused_by_name(hostile: ServerProcess) -> None:
    body = {"text_input": "a" * 1_000_000, "parameters": {"max_tokens": 1}}
    refused = assert_json_4xx(httpx.post(hostile.url + "/v2/models/text/generate", json=body), "max_prompt_tokens")
    assert refused["limit"] == {"name": "max_prompt_tokens", "value": 1_000_000, "limit": 8192}


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return int(next(line for line in status if line.startswith("VmRSS")).split()[1])


def test_a_websocket_that_never_reads_is_held_back_not_buffered(hostile: ServerProcess) -> None:
    """A client that sends and never reads: the server stops reading it (backpressure), its memory stays
    flat and other clients are answered."""
    assert hostile.process is not None
    before = _rss_kib(hostile.process.pid)
    step = json.dumps({"model": "identity", "sequence_id": "flood", "inputs": [0.0] * 4, "id": "x" * 200})
    sent = 0

    async def flood(seconds: float) -> None:
        nonlocal sent
        url = hostile.url.replace("http://", "ws://") + "/v2/stream"
        async with websockets.connect(url, max_queue=1) as socket:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                try:
                    await asyncio.wait_for(socket.send(step), 0.5)
                except TimeoutError:
                    continue  # the server stopped reading: its receive window is full
                sent += 1

    thread = threading.Thread(target=asyncio.run, args=(flood(6.0),))
    thread.start()
    time.sleep(3.0)
    health = [httpx.get(hostile.url + "/v2/health/ready").elapsed.total_seconds() for _ in range(20)]
    thread.join()
    grown_mib = (_rss_kib(hostile.process.pid) - before) / 1024
    assert max(health) < 0.5
    assert grown_mib < 100, f"the server grew {grown_mib:.0f} MiB while a client sent {sent} messages unread"


# -- 9. non-finite values, unknown routes ------------------------------------------------------------


def test_non_finite_inputs_are_refused_and_the_stream_stays_usable(hostile: ServerProcess) -> None:
    xs = np.random.default_rng(6).normal(0, 1, (2, 4)).astype(np.float32)
    expected, stream = reference(xs), sid()
    with httpx.Client(base_url=hostile.url) as client:
        output(client.post(INFER, json=seed_body(xs[0].tolist(), stream, sequence_start=True)))
        overflow = client.post(INFER, json=seed_body([1e39, 0, 0, 0], stream))  # finite in JSON, inf in FP32
        assert_json_4xx(overflow, "finite")
        nan = np.array([[np.nan, 0, 0, 0]], np.float32).tobytes()
        header = json.dumps({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32",
                                         "parameters": {"binary_data_size": 16}}],
                             "parameters": {"sequence_id": stream}}).encode()
        binary = client.post(INFER, content=header + nan, headers={"Inference-Header-Content-Length": str(len(header))})
        assert_json_4xx(binary, "finite")
        second = output(client.post(INFER, json=seed_body(xs[1].tolist(), stream)))
    assert second == pytest.approx(expected[1], abs=1e-6)


def test_unknown_routes_and_methods_answer_json(hostile: ServerProcess) -> None:
    with httpx.Client(base_url=hostile.url) as client:
        assert_json_4xx(client.get("/no/such/route"))
        assert client.get("/no/such/route").status_code == 404
        wrong = client.delete("/v2/health/live")
        assert wrong.status_code == 405
        assert_json_4xx(wrong)


# -- 10. SIGTERM under load --------------------------------------------------------------------------


def test_sigterm_under_load_answers_every_request_in_flight() -> None:
    server = ServerProcess("seed").start()
    errors: list[str] = []
    answered = 0
    stop = threading.Event()

    def client(k: int) -> None:
        nonlocal answered
        stream = f"drain-{k}"
        with httpx.Client(base_url=server.url, timeout=30) as http:
            t = 0
            while not stop.is_set():
                try:
                    response = http.post(INFER, json=seed_body([0.1] * 4, stream, sequence_start=t == 0))
                except httpx.ConnectError:
                    return  # refused: the server no longer listens, nothing was in flight
                except httpx.HTTPError as error:
                    errors.append(repr(error))
                    return
                answered += 1
                t += 1
                if response.headers.get("connection") == "close":
                    return  # the server drains: it said so on its last answer

    threads = [threading.Thread(target=client, args=(k,)) for k in range(50)]
    for thread in threads:
        thread.start()
    time.sleep(1.5)
    assert server.process is not None
    server.process.terminate()
    assert server.process.wait(30) in (0, -signal.SIGTERM)  # uvicorn re-raises SIGTERM once it has drained
    stop.set()
    for thread in threads:
        thread.join()
    server.process = None
    assert answered > 100 and errors == []


# -- authorization ------------------------------------------------------------------------------------


def test_the_bearer_scheme_is_case_insensitive() -> None:
    server = ServerProcess("builtin:identity", "--token", "s3cret").start()
    try:
        body = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}],
                "parameters": {"sequence_id": "b", "sequence_start": True}}
        for scheme in ("Bearer", "bearer", "BEARER"):
            response = httpx.post(server.url + "/v2/models/identity/infer", json=body,
                                  headers={"Authorization": f"{scheme} s3cret"})
            assert response.status_code == 200, (scheme, response.text)
        assert httpx.post(server.url + "/v2/models/identity/infer", json=body,
                          headers={"Authorization": "bearer nope"}).status_code == 401
    finally:
        server.stop()



def test_sigterm_answers_every_websocket_message_it_received(tmp_path: Path) -> None:
    """Steps pipelined over a WebSocket while the server gets SIGTERM: every step the server applied was
    answered before it closed the socket (code 1012), so a client's count of acknowledged steps is the
    stream's own; what it sent after that was never read and is resent elsewhere."""
    redis = RedisServer(tmp_path).start()
    server = ServerProcess("seed", "--store", redis.url).start()
    acknowledged: Counter[str] = Counter()
    streams = [f"ws-drain-{k}" for k in range(20)]

    async def client() -> int | None:
        async with websockets.connect(server.url.replace("http://", "ws://") + "/v2/stream") as socket:

            async def send() -> None:
                for t in range(1, 10_000):
                    for stream in streams:
                        await socket.send(json.dumps({"model": "seed", "sequence_id": stream, "inputs": [0.1] * 4,
                                                      "sequence_start": t == 1, "sequence_step": t}))
                    await asyncio.sleep(0.002)

            sender = asyncio.get_running_loop().create_task(send())
            try:
                async for reply in socket:
                    answer = json.loads(reply)
                    assert "outputs" in answer, answer
                    acknowledged[answer["sequence_id"]] += 1
            except websockets.ConnectionClosed:
                pass
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, websockets.ConnectionClosed):
                await sender
            return socket.close_code

    try:
        server.terminate_after(1.5)
        code = asyncio.run(client())
        assert server.process is not None and server.process.wait(30) in (0, -signal.SIGTERM)
        server.process = None
        stored = rnnstream.Streams(SEED, redis.url)
        applied = {stream: stored.steps_applied(stream) for stream in streams}
        assert code == 1012 and sum(acknowledged.values()) > 200
        assert applied == {stream: acknowledged[stream] for stream in streams}
    finally:
        server.stop()
        redis.stop()


def test_allow_nonfinite_lets_nan_through() -> None:
    server = ServerProcess("builtin:identity", "--allow-nonfinite").start()
    try:
        nan = np.array([[np.nan, 1, 2, 3]], np.float32).tobytes()
        header = json.dumps({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32",
                                         "parameters": {"binary_data_size": 16}}],
                             "parameters": {"sequence_id": "n", "sequence_start": True}}).encode()
        response = httpx.post(server.url + "/v2/models/identity/infer", content=header + nan,
                              headers={"Inference-Header-Content-Length": str(len(header))})
        assert response.status_code == 200 and response.json()["outputs"][0]["data"][1:] == [1.0, 2.0, 3.0]
    finally:
        server.stop()
