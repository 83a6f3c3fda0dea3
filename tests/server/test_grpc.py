"""Triton's gRPC protocol, driven by the real ``tritonclient.grpc`` against a real server; and the HTTP
endpoints Triton's tools read (model config, statistics, repository), by ``tritonclient.http``."""

from __future__ import annotations

import asyncio
import json
import queue
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import websockets
from tritonclient.utils import InferenceServerException

import rnnstream
from rnnstream.server import grpc_service
from tests.redis_server import RedisServer
from tests.server.conftest import ServerProcess

SEED = rnnstream.load(rnnstream.demo.SEED_MODEL)


def sid(prefix: str = "g") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def step_input(x: np.ndarray) -> list[grpcclient.InferInput]:
    tensor = grpcclient.InferInput("input", [1, 4], "FP32")
    tensor.set_data_from_numpy(x.reshape(1, 4).astype(np.float32))
    return [tensor]


def reference(xs: np.ndarray) -> np.ndarray:
    """The seed model's outputs for sequences ``xs [n, T, 4]``, in process: ``[n, T]``."""
    ys, _ = SEED.run(xs, SEED.initial_state(len(xs)))
    return np.asarray(ys)[:, :, 0]


def test_unary_infer_with_sequence_ids_equals_in_process_steps(server: ServerProcess) -> None:
    xs = np.random.default_rng(0).normal(0, 1, (2, 4, 4)).astype(np.float32)
    client = grpcclient.InferenceServerClient(server.grpc_url)
    ids = [2**62 + 5, sid()]  # an integer id (int64_param) and a string id
    got = np.zeros((2, 4), np.float32)
    for t in range(4):
        for k, sequence in enumerate(ids):
            result = client.infer("seed", step_input(xs[k, t]), sequence_id=sequence, sequence_start=t == 0,
                                  sequence_end=t == 3, request_id=f"{k}/{t}")
            assert result.get_response().id == f"{k}/{t}"
            got[k, t] = result.as_numpy("output")[0, 0]
    np.testing.assert_allclose(got, reference(xs), rtol=1e-6, atol=1e-6)


def test_a_hundred_interleaved_sequences_on_one_stream_equal_in_process_steps(server: ServerProcess) -> None:
    n, T = 100, 5
    xs = np.random.default_rng(1).normal(0, 1, (n, T, 4)).astype(np.float32)
    ids = [sid("s") for _ in range(n)]
    answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client = grpcclient.InferenceServerClient(server.grpc_url)
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        for t in range(T):  # every sequence's step t before any sequence's step t + 1
            for k in range(n):
                client.async_stream_infer("seed", step_input(xs[k, t]), request_id=f"{k}/{t}", sequence_id=ids[k],
                                          sequence_start=t == 0, sequence_end=t == T - 1)
        got = np.full((n, T), np.nan, np.float32)
        for _ in range(n * T):
            result, error = answers.get(timeout=30)
            assert error is None, error
            k, t = map(int, result.get_response().id.split("/"))
            got[k, t] = result.as_numpy("output")[0, 0]
    finally:
        client.stop_stream()
    np.testing.assert_allclose(got, reference(xs), rtol=1e-6, atol=1e-6)


def test_a_failed_request_answers_an_error_and_the_stream_stays_open(server: ServerProcess) -> None:
    xs = np.random.default_rng(2).normal(0, 1, (1, 3, 4)).astype(np.float32)
    sequence = sid()
    answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client = grpcclient.InferenceServerClient(server.grpc_url)
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        wrong = grpcclient.InferInput("input", [1, 3], "FP32")
        wrong.set_data_from_numpy(np.zeros((1, 3), np.float32))
        client.async_stream_infer("seed", step_input(xs[0, 0]), request_id="0", sequence_id=sequence,
                                  sequence_start=True)
        assert answers.get(timeout=30)[1] is None
        client.async_stream_infer("seed", [wrong], request_id="bad", sequence_id=sequence)
        client.async_stream_infer("nope", step_input(xs[0, 1]), request_id="no-model", sequence_id=sequence)
        client.async_stream_infer("seed", step_input(xs[0, 1]), request_id="late", sequence_id=sequence,
                                  parameters={"sequence_step": 5})
        errors = [answers.get(timeout=30)[1] for _ in range(3)]
        messages = " | ".join(str(error) for error in errors)
        assert all(isinstance(error, InferenceServerException) for error in errors), messages
        assert "shape" in messages and "no model 'nope'" in messages and "takes step number 2 next" in messages
        for t in (1, 2):  # the stream is open, and the sequence unharmed by the refused steps
            client.async_stream_infer("seed", step_input(xs[0, t]), request_id=str(t), sequence_id=sequence)
            result, error = answers.get(timeout=30)
            assert error is None and result.get_response().id == str(t)
            assert result.as_numpy("output")[0, 0] == pytest.approx(reference(xs)[0, t], abs=1e-6)
    finally:
        client.stop_stream()


def test_unary_errors_are_grpc_statuses(server: ServerProcess) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    with pytest.raises(InferenceServerException, match="unknown sequence"):  # a step without a start
        client.infer("seed", step_input(np.zeros(4, np.float32)), sequence_id=sid())
    with pytest.raises(InferenceServerException) as refused:
        client.infer("seed", step_input(np.zeros(4, np.float32)))  # no sequence id
    assert refused.value.status() == "StatusCode.INVALID_ARGUMENT" and "sequence_id" in str(refused.value)
    with pytest.raises(InferenceServerException) as missing:
        client.get_model_metadata("nope")
    assert missing.value.status() == "StatusCode.NOT_FOUND"
    nan = grpcclient.InferInput("input", [1, 4], "FP32")
    nan.set_data_from_numpy(np.full((1, 4), np.nan, np.float32))
    with pytest.raises(InferenceServerException, match="non-finite"):
        client.infer("seed", [nan], sequence_id=sid(), sequence_start=True)


def test_a_sequence_moves_between_http_websocket_and_grpc(server: ServerProcess) -> None:
    xs = np.random.default_rng(3).normal(0, 1, (1, 3, 4)).astype(np.float32)
    sequence = sid("moving")
    body = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": xs[0, 0].tolist()}],
            "parameters": {"sequence_id": sequence, "sequence_start": True}}
    first = httpx.post(server.url + "/v2/models/seed/infer", json=body).json()["outputs"][0]["data"][0]

    async def over_websocket() -> float:
        async with websockets.connect(server.url.replace("http://", "ws://") + "/v2/stream") as socket:
            await socket.send(json.dumps({"model": "seed", "sequence_id": sequence, "inputs": xs[0, 1].tolist()}))
            return float(json.loads(await socket.recv())["outputs"]["output"][0])

    second = asyncio.run(over_websocket())
    client = grpcclient.InferenceServerClient(server.grpc_url)
    third = client.infer("seed", step_input(xs[0, 2]), sequence_id=sequence).as_numpy("output")[0, 0]
    np.testing.assert_allclose([first, second, third], reference(xs)[0], rtol=1e-6, atol=1e-6)


def test_metadata_config_statistics_and_repository_over_both_protocols(server: ServerProcess) -> None:
    grpc_client = grpcclient.InferenceServerClient(server.grpc_url)
    http_client = httpclient.InferenceServerClient(server.url.removeprefix("http://"))
    assert grpc_client.is_server_live() and grpc_client.is_server_ready() and grpc_client.is_model_ready("seed")
    assert "grpc" in grpc_client.get_server_metadata(as_json=True)["extensions"]
    metadata = grpc_client.get_model_metadata("seed", as_json=True)
    assert metadata["inputs"] == [{"name": "input", "datatype": "FP32", "shape": ["-1", "4"]}]
    for config in (grpc_client.get_model_config("seed", as_json=True)["config"], http_client.get_model_config("seed")):
        assert config["name"] == "seed" and config["max_batch_size"] == 1 and "sequence_batching" in config
        assert config["input"][0]["data_type"] == "TYPE_FP32" and [int(d) for d in config["input"][0]["dims"]] == [4]
    sequence = sid()
    grpc_client.infer("seed", step_input(np.zeros(4, np.float32)), sequence_id=sequence, sequence_start=True)
    over_grpc = grpc_client.get_inference_statistics("seed", as_json=True)["model_stats"][0]
    over_http = http_client.get_inference_statistics("seed")["model_stats"][0]
    for stats in (over_grpc, over_http):
        assert int(stats["inference_count"]) >= 1 and int(stats["execution_count"]) >= 1
        assert int(stats["inference_stats"]["compute_infer"]["ns"]) > 0
    every = http_client.get_inference_statistics()["model_stats"]
    assert {s["name"] for s in every} == {"seed", "identity"}
    assert {m["name"] for m in http_client.get_model_repository_index()} == {"seed", "identity"}
    http_client.load_model("seed")
    grpc_client.load_model("seed")
    for unload in (http_client.unload_model, grpc_client.unload_model):
        with pytest.raises(InferenceServerException, match="cannot be unloaded"):
            unload("seed")
    for missing in (http_client.get_model_config, http_client.get_inference_statistics, http_client.load_model):
        with pytest.raises(InferenceServerException, match="no model 'nope'"):
            missing("nope")


def test_grpc_needs_the_bearer_token_when_the_server_has_one(seed_token_server: ServerProcess) -> None:
    client = grpcclient.InferenceServerClient(seed_token_server.grpc_url)
    assert client.is_server_live()  # health needs no token, as over HTTP
    with pytest.raises(InferenceServerException) as refused:
        client.get_model_metadata("seed")
    assert refused.value.status() == "StatusCode.UNAUTHENTICATED"
    result = client.infer("seed", step_input(np.zeros(4, np.float32)), sequence_id=sid(), sequence_start=True,
                          headers={"authorization": "Bearer s3cret"})
    assert result.as_numpy("output").shape == (1, 1)


def test_raw_grpc_uint64_ids_size_limits_and_metrics(server: ServerProcess) -> None:
    """What tritonclient cannot send: a uint64 sequence id beyond int64 (Triton's form) and a message past
    --max-body-bytes; and gRPC requests are counted in /metrics."""
    import grpc
    from tritonclient.grpc import service_pb2 as pb
    from tritonclient.grpc import service_pb2_grpc as rpc

    with grpc.insecure_channel(server.grpc_url) as channel:
        stub = rpc.GRPCInferenceServiceStub(channel)
        xs = np.random.default_rng(4).normal(0, 1, (1, 2, 4)).astype(np.float32)
        sequence = 2**64 - 7
        got = []
        for t in range(2):
            request = pb.ModelInferRequest(model_name="seed")
            request.inputs.add(name="input", datatype="FP64", shape=[1, 4])  # cast to the model's FP32
            request.raw_input_contents.append(xs[0, t].astype("<f8").tobytes())
            request.parameters["sequence_id"].uint64_param = sequence
            request.parameters["sequence_start"].bool_param = t == 0
            got.append(np.frombuffer(stub.ModelInfer(request).raw_output_contents[0], "<f4")[0])
        np.testing.assert_allclose(got, reference(xs)[0], rtol=1e-6, atol=1e-6)
        big = pb.ModelInferRequest(model_name="seed")
        big.inputs.add(name="input", datatype="FP32", shape=[1, 4])
        big.raw_input_contents.append(b"\0" * 200_000)  # the server's limit is 100,000 bytes
        with pytest.raises(grpc.RpcError) as refused:
            stub.ModelInfer(big)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        with pytest.raises(grpc.RpcError) as wrong:
            stub.ModelInfer(pb.ModelInferRequest(model_name="seed"))  # no inputs: a 400
        assert wrong.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    page = httpx.get(server.url + "/metrics").text
    assert 'rnnstream_requests_total{code="200",model="seed",protocol="grpc"}' in page
    assert 'rnnstream_requests_total{code="400",model="seed",protocol="grpc"}' in page


def raw_step(request_id: str) -> Any:
    """A raw ``ModelInferRequest`` of one seed step (0.1 in every input), its ``id`` set."""
    from tritonclient.grpc import service_pb2 as pb

    request = pb.ModelInferRequest(model_name="seed", id=request_id)
    request.inputs.add(name="input", datatype="FP32", shape=[1, 4])
    request.raw_input_contents.append(np.full(4, 0.1, "<f4").tobytes())
    return request


def test_sigterm_after_a_cancelled_stream_does_not_wait_for_it() -> None:
    """A stream the client cancelled has ended for the drain too (the call's own end, not its handler's cleanup,
    is counted): SIGTERM then stops the server without waiting out the drain's grace for it."""
    import grpc
    from tritonclient.grpc import service_pb2 as pb
    from tritonclient.grpc import service_pb2_grpc as rpc

    server = ServerProcess("seed").start()
    release = threading.Event()

    def requests() -> Iterator[pb.ModelInferRequest]:
        yield raw_step("cancelled")
        release.wait(30)  # the stream stays open, idle, until the client cancels it

    try:
        with grpc.insecure_channel(server.grpc_url) as channel:
            call = rpc.GRPCInferenceServiceStub(channel).ModelStreamInfer(requests())
            assert next(call).infer_response.id == "cancelled"
            call.cancel()
        release.set()
        assert server.process is not None
        start = time.monotonic()
        server.process.terminate()
        assert server.process.wait(30) in (0, -signal.SIGTERM)
        assert time.monotonic() - start < grpc_service.GRACE_SECONDS
        server.process = None
    finally:
        release.set()
        server.stop()


def test_sigterm_answers_every_grpc_request_it_read(tmp_path: Path) -> None:
    """Steps pipelined on a ModelStreamInfer stream while the server gets SIGTERM: the server stops reading,
    answers every request it read, then ends the stream UNAVAILABLE, so a client's count of acknowledged
    steps is each sequence's own; what it sent after that was never read and is resent elsewhere."""
    import grpc
    from tritonclient.grpc import service_pb2 as pb
    from tritonclient.grpc import service_pb2_grpc as rpc

    redis = RedisServer(tmp_path).start()
    server = ServerProcess("seed", "--store", redis.url).start()
    sequences = [f"grpc-drain-{k}" for k in range(20)]
    acknowledged: Counter[str] = Counter()

    def requests() -> Iterator[pb.ModelInferRequest]:
        for t in range(1, 10_000):
            for sequence in sequences:
                request = raw_step(sequence)
                request.parameters["sequence_id"].string_param = sequence
                request.parameters["sequence_start"].bool_param = t == 1
                request.parameters["sequence_step"].int64_param = t
                yield request  # as fast as the stream takes them: the server's end races the client's sends

    try:
        server.terminate_after(1.5)
        with grpc.insecure_channel(server.grpc_url) as channel, pytest.raises(grpc.RpcError) as ended:
            for reply in rpc.GRPCInferenceServiceStub(channel).ModelStreamInfer(requests()):
                assert not reply.error_message, reply.error_message
                acknowledged[reply.infer_response.id] += 1
        assert ended.value.code() == grpc.StatusCode.UNAVAILABLE and "shutting down" in ended.value.details()
        assert server.process is not None and server.process.wait(30) in (0, -signal.SIGTERM)
        server.process = None
        stored = rnnstream.Streams(SEED, redis.url)
        assert sum(acknowledged.values()) > 200
        assert {sequence: stored.steps_applied(sequence) for sequence in sequences} == \
            {sequence: acknowledged[sequence] for sequence in sequences}
    finally:
        server.stop()
        redis.stop()
