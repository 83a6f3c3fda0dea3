"""bench engine: every engine's outputs agree with rnnstream, and the report, JSON and chart are written."""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rnnstream.backends import fused
from rnnstream.bench import engine, engine_results, engine_worker, peers
from rnnstream.errors import InputError

pytest.importorskip("onnxruntime")


def test_engines_agree_and_are_reported(tmp_path: Path) -> None:
    rows, missing = engine.measure("seed", (1, 3), ("rnnstream", "onnxruntime", "pytorch"), 1, 2, "auto")
    assert [r.batch for r in rows] == [1, 3]
    names = set(rows[0].seconds)
    assert {"rnnstream-fused", "onnxruntime"} <= names or {"rnnstream-numpy", "onnxruntime"} <= names
    assert ("pytorch" in names) != any(m.startswith("pytorch") for m in missing)
    for row in rows:
        assert all(seconds > 0 for seconds in row.seconds.values())
        assert max(row.max_difference.values()) <= 1e-5
        assert set(row.rounds) == set(row.seconds) and all(len(r) == 2 for r in row.rounds.values())
        assert len(row.limit_rounds) == 2 and 0 < min(row.limit_rounds) <= row.limit <= max(row.limit_rounds)
    text = engine.report(rows)
    assert "onnxruntime" in text and "×" in text
    assert rows[0].limit_blas.endswith(("1 thread", ")")) and f"product rate of {rows[0].limit_blas}" in text
    engine.save_json(rows, tmp_path / "e.json", {"threads": 1})
    assert json.loads((tmp_path / "e.json").read_text())["rows"][0]["batch"] == 1
    pytest.importorskip("matplotlib")
    engine.save_chart(rows, tmp_path / "e.png")
    assert (tmp_path / "e.png").read_bytes()[:4] == b"\x89PNG"


def test_an_engine_that_cannot_start_is_reported_not_fatal() -> None:
    rows, missing = engine.measure("seed", (1,), ("rnnstream", "no-such-engine"), 1, 1, "auto")
    assert list(rows[0].seconds) == [next(iter(rows[0].seconds))]
    assert missing and missing[0].startswith("no-such-engine")


def test_the_device_batch_row_agrees() -> None:
    """``device`` adds rnnstream's DeviceBatch on that torch device as one more engine."""
    pytest.importorskip("torch")
    rows, missing = engine.measure("seed", (1, 3), ("rnnstream", engine.DEVICE_ENGINE), 1, 1, "numpy",
                                   device="cpu")  # fmt: skip
    assert not missing and list(rows[0].seconds) == ["rnnstream-numpy", "rnnstream-device-cpu"]
    assert all(max(row.max_difference.values()) <= 1e-5 for row in rows)


@pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="POSIX signals")
def test_other_engines_are_paused_while_one_is_timed() -> None:
    """The other engines' processes are stopped during a timing round and continue after it."""
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        time.sleep(0.2)
        with engine._paused(iter([sleeper])):
            assert _settles_at(sleeper.pid, "T")  # stopped
        assert _settles_at(sleeper.pid, "S")  # sleeping again, not stopped
    finally:
        sleeper.kill()
        sleeper.wait()


def _settles_at(pid: int, state: str, seconds: float = 5.0) -> bool:
    """True once the process's state (``/proc/PID/stat``) is ``state``; signals arrive asynchronously."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == state:
            return True
        time.sleep(0.01)
    return False


def test_the_stepper_bf16_and_beside_rows_and_the_limit() -> None:
    """The pre-bound stepper and the steps beside ONNX Runtime, OpenBLAS, a pause or a cache-cooling read agree
    with rnnstream, and ONNX Runtime's beside them too; bf16 within its rounding; every row carries the arithmetic
    limit."""
    beside = tuple(f"rnnstream-beside-{n}" for n in ("ort", "ort-quiet", "blas", "blas-quiet", "pause", "evict"))
    beside += tuple(f"onnxruntime-beside-{n}" for n in ("blas", "blas-quiet", "pause", "evict"))
    engines = ("rnnstream", "rnnstream-stepper", "rnnstream-bf16", *beside)
    rows, missing = engine.measure("seed", (1, 3), engines, 1, 1, "fused")
    assert not missing
    assert list(rows[0].seconds) == ["rnnstream-fused", "rnnstream-stepper", "rnnstream-fused-bf16", *beside]
    for row in rows:
        assert max(d for e, d in row.max_difference.items() if e != "rnnstream-fused-bf16") <= 1e-5
        assert 0 < row.max_difference["rnnstream-fused-bf16"] < 1e-3
        assert row.limit > 0 and row.limit_blas  # not compared with the step: that is for the benchmark
        assert list(row.own_rounds) == list(beside)  # each timed alone too, in its own process
        assert all(len(own) == len(row.rounds[e]) == 1 and own[0] > 0 for e, own in row.own_rounds.items())
    text = engine.report(rows)
    assert "arithmetic limit" in text and "of which bf16" in text and "its own steps without it" in text


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def test_the_int8_engines_sit_next_to_their_fp32_peers() -> None:
    """Both are in the default engine list (every engine, Keras aside), each after its fp32 peer's kind."""
    assert engine.ENGINES.index("onnxruntime-int8") == engine.ENGINES.index("onnxruntime") + 1
    assert engine.ENGINES.index("rnnstream-int8") == engine.ENGINES.index("rnnstream-bf16-widen") + 1


@pytest.mark.parametrize("name", ["onnxruntime-beside-ort", "pytorch-beside-blas", "rnnstream-beside-sleep"])
def test_an_engine_beside_a_neighbour_is_one_of_the_listed_pairs(name: str) -> None:
    """Only the listed subject and neighbour pairs are engines: another is refused with the list."""
    model = engine_worker.load_model("seed", "numpy", 1)
    with pytest.raises(InputError, match=f"unknown engine '{name}'; engines: rnnstream, rnnstream-stepper,"):
        engine_worker.make_peer(name, model, 1, None)


@pytest.mark.parametrize(
    ("subject", "neighbour", "refused"),
    [("pytorch", "blas", "unknown engine 'pytorch'"), ("rnnstream", "sleep", "unknown neighbour 'sleep'"),
     ("onnxruntime", "ort-quiet", "ONNX Runtime beside itself")],
)  # fmt: skip
def test_beside_peer_refuses_an_unknown_subject_or_neighbour(subject: str, neighbour: str, refused: str) -> None:
    """A subject or neighbour not in the lists, or ONNX Runtime beside another session of itself, is refused before
    anything is built."""
    model = engine_worker.load_model("seed", "numpy", 1)
    with pytest.raises(InputError, match=refused):
        peers.beside_peer(model, subject, neighbour, 1)


def test_the_evict_neighbour_reads_eight_mebibytes_and_the_subject_steps_alone() -> None:
    """The cache-cooling control reads EVICT_BYTES of float32 ones (their sum counts them); the subject's step is
    the plain engine's, so its outputs are rnnstream's."""
    model = engine_worker.load_model("seed", "numpy", 1)
    peer = peers.beside_peer(model, "rnnstream", "evict", 1)
    assert peer.name == "rnnstream-beside-evict" and peer.neighbour is not None
    x = np.ones((2, 4), np.float32)
    assert float(peer.neighbour(2)(x)) == peers.EVICT_BYTES // 4 == 2 * 2**20
    np.testing.assert_array_equal(peer.make(2)(x), peers.rnnstream_peer(model).make(2)(x))


def test_the_int8_engines_agree_within_their_bound_and_are_reported(tmp_path: Path) -> None:
    """rnnstream-int8 (where the kernel runs int8) and onnxruntime-int8 differ from rnnstream fp32, but within
    their bound; the table and the JSON carry them. Without onnxruntime.quantization, onnxruntime-int8 is
    reported missing instead."""
    kernel_int8, quantization = fused.available() and fused.int8(), _importable("onnxruntime.quantization")
    wanted = {"rnnstream", "onnxruntime", "onnxruntime-int8", *(["rnnstream-int8"] if kernel_int8 else [])}
    rows, missing = engine.measure("seed", (1, 3), tuple(e for e in engine.ENGINES if e in wanted), 1, 1, "auto")
    ours = next(iter(rows[0].seconds))
    expected = [ours, *(["rnnstream-fused-int8"] if kernel_int8 else []), "onnxruntime",
                *(["onnxruntime-int8"] if quantization else [])]  # fmt: skip
    assert list(rows[0].seconds) == expected
    assert quantization or any(m.startswith("onnxruntime-int8:") and "quantization" in m for m in missing)
    int8 = [e for e in expected if e.endswith("-int8")]
    for row in rows:
        assert max(row.max_difference[e] for e in (ours, "onnxruntime")) <= 1e-5
        for name in int8:
            assert 0 < row.max_difference[name] < row.bound[name] < 0.05  # seed outputs: below 1
            assert row.bound[name] > 100 * row.bound[ours]
    if int8:
        assert "of which int8" in engine.report(rows)
        engine.save_json(rows, tmp_path / "e.json", {"threads": 1})
        saved = json.loads((tmp_path / "e.json").read_text())["rows"][0]
        assert set(int8) <= set(saved["seconds"]) & set(saved["max_difference"]) & set(saved["bound"])


def test_an_engine_beyond_its_bound_is_stopped_with_a_note(monkeypatch: pytest.MonkeyPatch) -> None:
    """fp32 within 1e-5; bf16 and int8 within their roundings of the outputs' scale; NaN never agrees. Real
    engines held to fp32's bound at int8 (no rounding allowed) miss it: stopped, untimed, with a note."""
    differences = {"rnnstream-fused": 0.0, "onnxruntime": 2e-5, "rnnstream-fused-bf16": 1e-3,
                   "rnnstream-fused-int8": 0.1, "onnxruntime-int8": float("nan"), "pytorch": 1e-7}  # fmt: skip
    row = engine_results.Row("seed", 3, max_difference=dict(differences))
    row.bound = {e: engine_results.agreement_bound(e, 0.5) for e in differences}
    assert row.bound["rnnstream-fused"] == engine_results.FP32_BOUND
    assert row.bound["rnnstream-fused-int8"] == pytest.approx(6 * 2 / 254 * 0.5)
    assert engine_results.disagreeing(row) == ["onnxruntime", "rnnstream-fused-int8", "onnxruntime-int8"]
    if not _importable("onnxruntime.quantization"):
        pytest.skip("no onnxruntime.quantization")
    monkeypatch.setattr(engine_results, "ROUNDINGS_ALLOWED", 0)
    rows, notes = engine.measure("seed", (3,), ("rnnstream", "onnxruntime", "onnxruntime-int8"), 1, 1, "auto")
    assert list(rows[0].seconds) == [next(iter(rows[0].seconds)), "onnxruntime"]
    assert len(notes) == 1 and notes[0].startswith("onnxruntime-int8: outputs differ from rnnstream")
    assert "at batch 3, over its bound 1.00e-05" in notes[0]


_INT8_MISSING = """
import json
from rnnstream.bench import engine
rows, missing = engine.measure("seed", (1,), ("rnnstream", "rnnstream-int8"), 1, 1, {backend!r})
print(json.dumps([list(rows[0].seconds), missing]))
"""


@pytest.mark.parametrize(
    ("isa", "backend", "why"), [("portable", "auto", "AVX2 or AVX512_VNNI"), (None, "numpy", "fused kernel")]
)
def test_rnnstream_int8_is_missing_where_the_kernel_cannot_run_it(isa: str | None, backend: str, why: str) -> None:
    """Under RNNSTREAM_KERNEL_ISA=portable (no int8 path) or on another backend, rnnstream-int8 is a note, not a
    crash."""
    if isa and not fused.available():
        pytest.skip("the fused kernel is not built")
    env = {**os.environ, **({"RNNSTREAM_KERNEL_ISA": isa} if isa else {})}
    done = subprocess.run([sys.executable, "-c", _INT8_MISSING.format(backend=backend)], env=env,
                          capture_output=True, text=True, check=True)  # fmt: skip
    timed, missing = json.loads(done.stdout.splitlines()[-1])
    assert len(timed) == 1 and not timed[0].endswith("int8")
    assert len(missing) == 1 and missing[0].startswith("rnnstream-int8:") and why in missing[0]


_IDLE_CPU = """
import time, numpy as np, rnnstream
from rnnstream.bench import peers
model = rnnstream.load(rnnstream.demo.SEED_MODEL)
neighbour = peers.beside_peer(model, "rnnstream", {neighbour!r}, 2).neighbour
assert neighbour is not None
step, x = neighbour(64), np.ones((64, 4), np.float32)
burnt = []
for _ in range(5):
    step(x)
    start = time.process_time()
    time.sleep(0.05)
    burnt.append(time.process_time() - start)
print(sorted(burnt)[2])
"""


@pytest.mark.parametrize("neighbour", ["ort-quiet", "blas-quiet"])
def test_a_quiet_neighbour_leaves_the_cores_alone(neighbour: str) -> None:
    """Told not to spin (ONNX Runtime's allow_spinning 0, OpenBLAS's thread timeout), the neighbour's
    threads burn next to no CPU while the process sleeps after its call (spinning, each burns ~all of it)."""
    env = {**os.environ, **peers.QUIET_ENVIRONMENT}
    done = subprocess.run([sys.executable, "-c", _IDLE_CPU.format(neighbour=neighbour)], env=env,
                          capture_output=True, text=True, check=True)  # fmt: skip
    assert float(done.stdout) < 0.01  # of 0.05 s asleep
