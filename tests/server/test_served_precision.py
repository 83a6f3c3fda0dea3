"""``rnnstream serve --precision``, against real server processes: a bf16 server steps as the bf16 model does
in-process (and not as fp32), a model version loaded later from the repository too, and the model's
configuration names the precision; an int8 server likewise; an unknown precision, or bf16-dot or int8 where
the CPU cannot compute it, is refused at start."""

from __future__ import annotations

import json
import re
import shutil
import threading
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient

import rnnstream
from rnnstream.backends import fused
from rnnstream.cli import main
from rnnstream.errors import InputError
from rnnstream.precision import check_precision
from rnnstream.server.config import ServerConfig
from rnnstream.server.triton_model import precision
from tests.server.conftest import ServerProcess


def stepped(model: rnnstream.StreamModel, xs: np.ndarray) -> np.ndarray:
    """One stream stepped in-process with ``model.step``: its outputs, one per row of ``xs``."""
    state, outputs = model.initial_state(1), []
    for x in xs:
        y, state = model.step(x[None], state)
        outputs.append(float(np.asarray(y)[0, 0]))
    return np.array(outputs)


def served(url: str, xs: np.ndarray, version: str | None = None) -> np.ndarray:
    """One new stream stepped through the server (``version`` of seed, else its newest): its outputs."""
    path = f"/v2/models/seed/versions/{version}/infer" if version else "/v2/models/seed/infer"
    sequence, outputs = f"seq-{uuid.uuid4().hex[:10]}", []
    for t, x in enumerate(xs):
        body = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": x.tolist()}],
                "parameters": {"sequence_id": sequence, "sequence_start": t == 0}}
        reply = httpx.post(url + path, json=body, timeout=30)
        assert reply.status_code == 200, reply.text
        outputs.append(reply.json()["outputs"][0]["data"][0])
    return np.array(outputs)


def test_a_bf16_server_steps_as_the_bf16_model_and_says_so(tmp_path: Path) -> None:
    (tmp_path / "seed" / "1").mkdir(parents=True)
    shutil.copy(rnnstream.demo.SEED_MODEL, tmp_path / "seed" / "1" / "model.keras")
    bf16 = rnnstream.load(rnnstream.demo.SEED_MODEL, precision="bf16")
    fp32 = rnnstream.load(rnnstream.demo.SEED_MODEL)
    xs = np.random.default_rng(0).normal(0, 1, (6, 4)).astype(np.float32)
    expected = stepped(bf16, xs)
    assert np.abs(expected - stepped(fp32, xs)).max() > 1e-6  # the two precisions are told apart
    server = ServerProcess("--model-repository", str(tmp_path), "--precision", "bf16").start()
    try:
        np.testing.assert_allclose(served(server.url, xs), expected, rtol=0, atol=1e-6)
        (tmp_path / "seed" / "2").mkdir()  # a version loaded later is served at the same precision
        shutil.copy(rnnstream.demo.SEED_MODEL, tmp_path / "seed" / "2" / "model.keras")
        assert httpx.post(server.url + "/v2/repository/models/seed/load", timeout=60).status_code == 200
        np.testing.assert_allclose(served(server.url, xs, version="2"), expected, rtol=0, atol=1e-6)

        mode = precision(bf16)  # bf16 as this machine computes it: bf16-dot or bf16-widen (fused), else bf16
        assert mode in ("bf16-dot", "bf16-widen", "bf16")
        for version in ("", "/versions/1", "/versions/2"):
            path = f"/v2/models/seed{version}/config"
            assert httpx.get(server.url + path).json()["parameters"]["precision"] == {"string_value": mode}
        config = grpcclient.InferenceServerClient(server.grpc_url).get_model_config("seed", as_json=True)["config"]
        assert config["parameters"]["precision"] == {"string_value": mode}
    finally:
        server.stop()


def test_an_unknown_precision_is_refused_before_any_model_loads(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(InputError) as refused:
        check_precision("fp8")
    with pytest.raises(InputError, match="unknown precision 'fp8'; choose one of fp32, bf16, bf16-widen, bf16-dot"):
        ServerConfig(models=["no-such-file.keras"], precision="fp8")  # the model would be a ModelFileError
    with pytest.raises(InputError, match=re.escape(str(refused.value))):
        ServerConfig.from_json('{"precision": "fp8"}')  # as a worker process gets it
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--precision", "fp8"])
    assert exited.value.code == 2
    assert "argument --precision: invalid choice: 'fp8'" in capsys.readouterr().err


@pytest.mark.skipif(not fused.available(), reason="no fused kernel: backend auto is numpy, which emulates both")
@pytest.mark.parametrize(
    ("mode", "why"), [("bf16-dot", "AVX512_BF16, which this CPU lacks"), ("int8", "AVX2 or AVX512_VNNI")]
)
def test_a_precision_the_cpu_lacks_is_refused_at_start(monkeypatch: pytest.MonkeyPatch, mode: str, why: str) -> None:
    monkeypatch.delenv("RNNSTREAM_BACKEND", raising=False)
    monkeypatch.setenv("RNNSTREAM_KERNEL_ISA", "portable")  # neither mode there, whatever this CPU has
    server = ServerProcess("seed", "--precision", mode)
    with pytest.raises(RuntimeError, match=f"rnnstream: error: {mode} needs {why}"):
        server.start()
    assert server.process is not None and server.process.wait(timeout=30) == 2


@pytest.mark.skipif(not fused.available() or not fused.int8(), reason="the kernel has no int8 path here")
def test_an_int8_server_steps_as_the_int8_model_and_says_so() -> None:
    int8 = rnnstream.load(rnnstream.demo.SEED_MODEL, precision="int8")
    xs = np.random.default_rng(1).normal(0, 1, (6, 4)).astype(np.float32)
    expected = stepped(int8, xs)
    assert np.abs(expected - stepped(rnnstream.load(rnnstream.demo.SEED_MODEL), xs)).max() > 1e-6
    server = ServerProcess("seed", "--precision", "int8").start()
    try:
        np.testing.assert_allclose(served(server.url, xs), expected, rtol=0, atol=1e-6)
        assert httpx.get(server.url + "/v2/models/seed/config").json()["parameters"]["precision"] == {
            "string_value": "int8"
        }
    finally:
        server.stop()


@pytest.mark.skipif(not fused.available() or not fused.int8(), reason="the kernel has no int8 path here")
def test_an_int8_stream_is_unmoved_by_hostile_batch_mates() -> None:
    """Each row is quantized by its own scale, so batch-mates sending NaN, inf, 1e30 or 1e-38 (let through by
    --allow-nonfinite) change nothing in another stream's outputs: it equals its in-process replay."""
    int8 = rnnstream.load(rnnstream.demo.SEED_MODEL, precision="int8")
    xs = np.random.default_rng(2).normal(0, 1, (40, 4)).astype(np.float32)
    server = ServerProcess("seed", "--precision", "int8", "--allow-nonfinite").start()
    stop, answers = threading.Event(), []

    def hostile(value: float, index: int) -> None:
        with httpx.Client(timeout=30) as client:
            for t in range(10_000):
                if stop.is_set():
                    return
                row = np.full((1, 4), value, np.float32).tobytes()
                header = json.dumps({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32",
                                                 "parameters": {"binary_data_size": 16}}],
                                     "parameters": {"sequence_id": f"hostile-{index}", "sequence_start": t == 0}})
                reply = client.post(server.url + "/v2/models/seed/infer", content=header.encode() + row,
                                    headers={"Inference-Header-Content-Length": str(len(header))})
                answers.append(reply.status_code)

    threads = [threading.Thread(target=hostile, args=(value, i))
               for i, value in enumerate([np.nan, np.inf, 1e30, 1e-38])]  # fmt: skip
    try:
        for thread in threads:
            thread.start()
        got = served(server.url, xs)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        server.stop()
    assert len(answers) >= len(xs) and set(answers) == {200}  # they stepped all along the canary
    np.testing.assert_allclose(got, stepped(int8, xs), rtol=1e-5, atol=1e-5)
