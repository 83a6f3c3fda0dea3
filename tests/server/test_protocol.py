"""The HTTP protocol that answers small infer requests itself, on a real uvicorn server in this process
(so that a subclass can count which requests it answered), over raw sockets and httpx."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any, BinaryIO

import httpx
import numpy as np
import pytest
import uvicorn

import rnnstream
from rnnstream.server.app import create_app
from rnnstream.server.config import ServerConfig
from rnnstream.server.protocol import InferCycle, InferProtocol
from tests.redis_server import free_port

SEED = rnnstream.load(rnnstream.demo.SEED_MODEL)
INFER = "/v2/models/seed/infer"


class CountingProtocol(InferProtocol):
    """InferProtocol, counting the requests it answers itself."""

    answered = 0

    def begin(self, cycle: InferCycle, name: str, version: str | None, headers: dict[bytes, bytes]) -> None:
        type(self).answered += 1
        super().begin(cycle, name, version, headers)


@contextlib.contextmanager
def running(config: ServerConfig, **options: Any) -> Iterator[tuple[str, int]]:
    """A uvicorn server with CountingProtocol on a thread of this process; yields (host, port)."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(config), host="127.0.0.1", port=port, http=CountingProtocol,
                                           log_level="warning", access_log=False, **options))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield "127.0.0.1", port
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(scope="module")
def address() -> Iterator[tuple[str, int]]:
    with running(ServerConfig(models=["seed", "builtin:identity"], max_body_bytes=100_000),
                 timeout_keep_alive=1) as host_port:
        yield host_port


def sid() -> str:
    return f"seq-{uuid.uuid4().hex[:10]}"


def infer_body(x: np.ndarray, sequence_id: str, **parameters: Any) -> bytes:
    return json.dumps({
        "inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": x.reshape(-1).tolist()}],
        "parameters": {"sequence_id": sequence_id, **parameters},
    }).encode()


def post(path: str, body: bytes, *headers: str) -> bytes:
    """A raw HTTP/1.1 POST with a content-length."""
    head = [f"POST {path} HTTP/1.1", "Host: test", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def read_response(reader: BinaryIO) -> tuple[int, dict[str, str], bytes]:
    status_line = reader.readline()
    assert status_line.startswith(b"HTTP/1.1 "), status_line
    headers = {}
    while (line := reader.readline()) not in (b"\r\n", b""):
        name, value = line.decode().split(":", 1)
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, reader.read(int(headers.get("content-length", "0")))


def reference(xs: np.ndarray) -> np.ndarray:
    ys, _ = SEED.run(xs[None], SEED.initial_state(1))
    return np.asarray(ys[0, :, 0])


def test_infer_requests_are_answered_here_as_the_app_answers_them(address: tuple[str, int]) -> None:
    """The same requests, with a content-length (answered by the protocol) and chunked (by the app)."""
    url = "http://{}:{}".format(*address)
    x = np.random.default_rng(0).normal(0, 1, 4).astype(np.float32)

    def ask(body: bytes, headers: dict[str, str], chunked: bool, path: str = INFER) -> tuple[int, str, str, bytes]:
        """Status, content type, JSON part (as text) and binary part of the reply."""
        content: Any = iter([body]) if chunked else body  # an iterator goes out chunked
        before = CountingProtocol.answered
        response = httpx.post(url + path, content=content, headers=headers)
        assert CountingProtocol.answered == before + (not chunked)
        length = int(response.headers.get("inference-header-content-length", len(response.content)))
        return (response.status_code, response.headers["content-type"], response.content[:length].decode(),
                response.content[length:])

    binary_header = json.dumps({
        "inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "parameters": {"binary_data_size": 16}}],
        "outputs": [{"name": "output", "parameters": {"binary_data": True}}],
        "parameters": {"sequence_id": "{id}", "sequence_start": True},
    })
    cases: dict[str, Any] = {
        "start": lambda s: (infer_body(x, s, sequence_start=True), {}),
        "next step": lambda s: (infer_body(x, s), {}),
        "wrong shape": lambda s: (infer_body(np.zeros(5, np.float32), s), {}),
        "invalid json": lambda s: (b"{not json", {}),
        "unknown sequence": lambda s: (infer_body(x, s + "-new"), {}),
        "binary": lambda s: (binary_header.replace("{id}", s).encode() + x.tobytes(),
                             {"Inference-Header-Content-Length": str(len(binary_header.replace("{id}", s)))}),
    }
    fast, slow = sid(), sid()
    for case, make in cases.items():
        here, there = ask(*make(fast), chunked=False), ask(*make(slow), chunked=True)
        assert here[:2] == there[:2] and here[3] == there[3], case
        assert here[2].replace(fast, slow) == there[2], case
    assert cases and here[0] == 200 and len(here[3]) == 4  # the last case: a binary output
    assert ask(infer_body(x, sid()), {}, False, "/v2/models/nope/infer")[0] == 404
    step = ask(infer_body(x, sid(), sequence_start=True), {}, False, "/v2/models/seed/versions/1/infer")
    value = json.loads(step[2])["outputs"][0]["data"][0]
    assert step[0] == 200 and value == pytest.approx(reference(x[None])[0], abs=1e-6)


def test_requests_the_app_answers(address: tuple[str, int]) -> None:
    """Large bodies, Expect: 100-continue, HTTP/1.0 and every other route go to the app, and work."""
    url = "http://{}:{}".format(*address)
    x = np.zeros(4, np.float32)
    before = CountingProtocol.answered
    padded = json.loads(infer_body(x, sid(), sequence_start=True))
    padded["padding"] = "x" * 70_000  # over the 64 KiB answered here, under the server's 100,000
    assert httpx.post(url + INFER, json=padded).status_code == 200
    assert httpx.post(url + INFER, content=b"[" + b"0," * 60_000 + b"0]").status_code == 413
    assert httpx.get(url + "/v2/models/seed").json()["name"] == "seed"
    assert httpx.get(url + INFER).status_code == 405
    with socket.create_connection(address) as connection:
        connection.sendall(post(INFER, infer_body(x, sid(), sequence_start=True), "Expect: 100-continue")[:-1])
        reader = connection.makefile("rb")
        assert reader.readline() == b"HTTP/1.1 100 Continue\r\n" and reader.readline() == b"\r\n"
        connection.sendall(b"}")
        assert read_response(reader)[0] == 200
    with socket.create_connection(address) as connection:
        body = infer_body(x, sid(), sequence_start=True)
        connection.sendall(f"POST {INFER} HTTP/1.0\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        response = connection.makefile("rb").read()
        assert response.startswith(b"HTTP/1.1 200") and b'"outputs"' in response  # and the server closed it
    assert CountingProtocol.answered == before


def test_pipelined_requests_are_answered_in_order(address: tuple[str, int]) -> None:
    xs = np.random.default_rng(1).normal(0, 1, (3, 4)).astype(np.float32)
    stream = sid()
    requests = [
        post(INFER, infer_body(xs[0], stream, sequence_start=True)),
        post(INFER, infer_body(xs[1], stream)),
        b"GET /v2/models/identity HTTP/1.1\r\nHost: test\r\n\r\n",
        post(INFER, infer_body(xs[2], stream)),
        post(INFER, infer_body(xs[2], sid())),  # an unknown sequence
    ]
    with socket.create_connection(address) as connection:
        connection.sendall(b"".join(requests))
        reader = connection.makefile("rb")
        responses = [read_response(reader) for _ in requests]
    assert [status for status, _, _ in responses] == [200, 200, 200, 200, 400]
    outputs = [json.loads(responses[k][2])["outputs"][0]["data"][0] for k in (0, 1, 3)]
    np.testing.assert_allclose(outputs, reference(xs), atol=1e-6)
    assert json.loads(responses[2][2])["name"] == "identity"
    assert "unknown sequence" in json.loads(responses[4][2])["error"]


def test_idle_connections_close_after_the_keep_alive_timeout(address: tuple[str, int]) -> None:
    """One second here: a connection in use stays open however long it lives; an idle one is closed."""
    x = np.zeros(4, np.float32)
    with socket.create_connection(address) as connection:
        reader = connection.makefile("rb")
        stream = sid()
        connection.sendall(post(INFER, infer_body(x, stream, sequence_start=True)))
        assert read_response(reader)[0] == 200
        for _ in range(8):  # 2.4 s of requests 0.3 s apart
            time.sleep(0.3)
            connection.sendall(post(INFER, infer_body(x, stream)))
            assert read_response(reader)[0] == 200
        time.sleep(1.6)
        connection.settimeout(5)
        assert connection.recv(1) == b""  # closed by the server


def test_connection_close_and_a_client_that_leaves(address: tuple[str, int]) -> None:
    x = np.random.default_rng(2).normal(0, 1, (2, 4)).astype(np.float32)
    stream = sid()
    with socket.create_connection(address) as connection:
        connection.sendall(post(INFER, infer_body(x[0], stream, sequence_start=True, sequence_step=1),
                                "Connection: close"))
        reader = connection.makefile("rb")
        status, headers, _ = read_response(reader)
        assert status == 200 and headers["connection"] == "close" and reader.read() == b""
    with socket.create_connection(address) as connection:  # sends a step and leaves without its answer
        connection.sendall(post(INFER, infer_body(x[1], stream, sequence_step=2)))
    deadline = time.monotonic() + 10
    while True:  # the step stands: a retry of it is answered from the store, the next step number is 3
        retry = httpx.post("http://{}:{}{}".format(*address, INFER), content=infer_body(x[1], stream, sequence_step=2))
        if retry.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert retry.json()["outputs"][0]["data"][0] == pytest.approx(reference(x)[1], abs=1e-6)


def test_the_bearer_token_is_checked_before_answering_here() -> None:
    with running(ServerConfig(models=["seed"], token="s3cret")) as address:
        url = "http://{}:{}{}".format(*address, INFER)
        body = infer_body(np.zeros(4, np.float32), sid(), sequence_start=True)
        before = CountingProtocol.answered
        assert httpx.post(url, content=body).status_code == 401
        assert httpx.post(url, content=body, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert CountingProtocol.answered == before
        assert httpx.post(url, content=body, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert CountingProtocol.answered == before + 1
