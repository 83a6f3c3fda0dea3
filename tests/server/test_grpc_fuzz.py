"""Generated hostile gRPC requests against a real server: every unary call ends with OK or a client's status
(never INTERNAL or UNKNOWN), every request on a ModelStreamInfer stream is answered and the stream stays
open, and a canary sequence stepped beside them equals an in-process replay.

``RNNSTREAM_FUZZ_SCALE`` multiplies the number of cases (``make soak``).
"""

from __future__ import annotations

import os
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as rpc

import rnnstream
from tests.server.conftest import ServerProcess

SCALE = int(os.environ.get("RNNSTREAM_FUZZ_SCALE", "1"))
SETTINGS = settings(deadline=None, derandomize=SCALE == 1, database=None, suppress_health_check=list(HealthCheck))
SEED = rnnstream.load(rnnstream.demo.SEED_MODEL)
CLIENT_STATUSES = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
                   grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ABORTED, grpc.StatusCode.UNAVAILABLE,
                   grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.DEADLINE_EXCEEDED}
RESULTS: Counter[tuple[str, str]] = Counter()
DATATYPES = ["FP32", "FP64", "FP16", "INT64", "INT32", "INT8", "UINT8", "UINT64", "BOOL", "BYTES", "", "fp32"]
SEQUENCES = [f"fuzz-{k}" for k in range(4)]


def parameter(draw: st.DrawFn, message: pb.InferParameter) -> None:
    """Any kind of parameter value, fitting or not."""
    kind = draw(st.sampled_from(["bool", "int64", "uint64", "string", "double"]))
    if kind == "bool":
        message.bool_param = draw(st.booleans())
    elif kind == "int64":
        message.int64_param = draw(st.integers(-(2**63), 2**63 - 1) | st.sampled_from([0, 1, 2, 3]))
    elif kind == "uint64":
        message.uint64_param = draw(st.integers(0, 2**64 - 1))
    elif kind == "string":
        message.string_param = draw(st.sampled_from(SEQUENCES) | st.text(max_size=300))
    else:
        message.double_param = draw(st.floats(allow_nan=True))


@st.composite
def infer_requests(draw: st.DrawFn) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=draw(st.sampled_from(["seed", "identity", "nope", ""])),
                                   model_version=draw(st.sampled_from(["", "", "1", "2"])),
                                   id=draw(st.text(max_size=20) | st.just("x" * 300)))
    raw = draw(st.booleans())
    for _ in range(draw(st.integers(0, 2))):
        datatype = draw(st.sampled_from(DATATYPES))
        shape = draw(st.lists(st.integers(-2, 5) | st.just(2**40), max_size=3))
        entry = request.inputs.add(name=draw(st.sampled_from(["input", "input", "x", ""])), datatype=datatype,
                                   shape=shape)
        if raw:
            request.raw_input_contents.append(draw(st.binary(max_size=40) | st.just(np.ones(4, "<f4").tobytes())))
        else:
            values = draw(st.lists(st.floats(width=32, allow_nan=True, allow_infinity=True), max_size=6))
            entry.contents.fp32_contents.extend(values)
            entry.contents.int64_contents.extend(draw(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=3)))
    for name in draw(st.lists(st.sampled_from(["sequence_id", "sequence_start", "sequence_end", "sequence_step",
                                               "sequence_outputs", "priority"]), unique=True)):
        parameter(draw, request.parameters[name])
    for name in draw(st.lists(st.sampled_from(["output", "nope"]), max_size=2)):
        request.outputs.add(name=name)
    return request


@st.composite
def seed_steps(draw: st.DrawFn) -> pb.ModelInferRequest:
    """Steps of the fuzz sequences that mostly fit: a start, a next step, a retry, a wrong number, a NaN, a
    history of T steps ([1, T, 4]) asking for the last or every step's outputs."""
    request = pb.ModelInferRequest(model_name="seed", id=draw(st.text(max_size=8)))
    T = draw(st.sampled_from([None, None, 1, 3]))
    request.inputs.add(name="input", datatype=draw(st.sampled_from(["FP32", "FP32", "FP64", "INT8"])),
                       shape=[1, 4] if T is None else [1, T, 4])
    if T is not None and draw(st.booleans()):
        request.parameters["sequence_outputs"].string_param = draw(st.sampled_from(["last", "all", "some"]))
    count = 4 * (T or 1)
    values = draw(st.lists(st.floats(-10, 10, width=32) | st.sampled_from([np.nan, np.inf]), min_size=count,
                           max_size=count))
    dtype = {"FP32": "<f4", "FP64": "<f8", "INT8": "i1"}[request.inputs[0].datatype]
    request.raw_input_contents.append(np.nan_to_num(values, nan=0.0, posinf=0.0).astype(dtype).tobytes()
                                      if dtype == "i1" else np.asarray(values, dtype).tobytes())
    request.parameters["sequence_id"].string_param = draw(st.sampled_from(SEQUENCES))
    if draw(st.booleans()):
        request.parameters["sequence_start"].bool_param = True
    if draw(st.booleans()):
        request.parameters["sequence_step"].int64_param = draw(st.integers(1, 4))
    return request


REQUESTS = st.one_of(seed_steps(), infer_requests())


@pytest.fixture(scope="module")
def channel(server: ServerProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.grpc_url) as opened:
        yield opened


class Canary:
    """A seed sequence stepped over gRPC, with step numbers, between the fuzzed calls."""

    def __init__(self, stub: rpc.GRPCInferenceServiceStub) -> None:
        self.stub, self.id = stub, f"canary-{uuid.uuid4().hex[:8]}"
        self.sent: list[np.ndarray] = []
        self.got: list[float] = []
        self.rng = np.random.default_rng(5)

    def step(self) -> None:
        x = self.rng.normal(0, 1, 4).astype(np.float32)
        request = pb.ModelInferRequest(model_name="seed")
        request.inputs.add(name="input", datatype="FP32", shape=[1, 4])
        request.raw_input_contents.append(x.tobytes())
        request.parameters["sequence_id"].string_param = self.id
        request.parameters["sequence_step"].int64_param = len(self.sent) + 1
        if not self.sent:
            request.parameters["sequence_start"].bool_param = True
        reply = self.stub.ModelInfer(request, timeout=30)
        self.sent.append(x)
        self.got.append(float(np.frombuffer(reply.raw_output_contents[0], "<f4")[0]))

    def check(self) -> None:
        ys, _ = SEED.run(np.stack(self.sent)[None], SEED.initial_state(1))
        np.testing.assert_allclose(self.got, np.asarray(ys)[0, :, 0], rtol=1e-5, atol=1e-6)


def test_unary_calls_end_in_a_clients_status(channel: grpc.Channel) -> None:
    stub = rpc.GRPCInferenceServiceStub(channel)
    canary = Canary(stub)

    @settings(SETTINGS, max_examples=400 * SCALE)
    @given(REQUESTS)
    def call(request: pb.ModelInferRequest) -> None:
        try:
            stub.ModelInfer(request, timeout=30)
            code = grpc.StatusCode.OK
        except grpc.RpcError as error:
            code = error.code()
        RESULTS["unary", code.name] += 1
        assert code in CLIENT_STATUSES, (code, request)
        canary.step()

    call()
    canary.check()


def test_every_request_on_a_stream_is_answered_and_the_stream_stays_open(channel: grpc.Channel) -> None:
    stub = rpc.GRPCInferenceServiceStub(channel)

    @settings(SETTINGS, max_examples=60 * SCALE)
    @given(st.lists(REQUESTS, min_size=1, max_size=12))
    def stream(requests: list[pb.ModelInferRequest]) -> None:
        replies: list[Any] = list(stub.ModelStreamInfer(iter(requests), timeout=60))
        assert len(replies) == len(requests)
        for reply in replies:
            RESULTS["stream", "error" if reply.error_message else "ok"] += 1
            assert "internal error" not in reply.error_message

    stream()
    print(dict(RESULTS))
