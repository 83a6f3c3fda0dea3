"""bf16 weights on every backend against the oracle at bf16 (the same rounded weights, float32 sums):
within the fp32 tolerance, step by step, on every zoo model."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import rnnstream
from rnnstream.backends import concrete_precision, fused, packing
from rnnstream.precision import round_bf16
from rnnstream.state import State
from tests.backends.conformance import assert_agrees_step_by_step
from tests.backends.test_fused import _layer, _single_layer_model
from tests.zoo import ZooModel, feed, make_inputs


@pytest.mark.parametrize("batch", [1, 37])
@pytest.mark.parametrize("mode", ["bf16-widen", "bf16-dot"])
def test_fused_bf16_agrees_with_the_bf16_oracle(zoo_file: tuple[ZooModel, Path], batch: int, mode: str) -> None:
    """Each mode against the NumPy oracle at the same mode: bf16-widen within the fp32 tolerance; bf16-dot
    (the AVX512_BF16 path) within it but for rare bfloat16 roundings apart (conformance.assert_close)."""
    if not fused.available():
        pytest.skip("the fused kernel is not built")
    if mode == "bf16-dot" and not fused.bf16_dot():
        pytest.skip("this CPU has no AVX512_BF16")
    zoo, path = zoo_file
    zoo = dataclasses.replace(zoo, batch=batch)
    model = rnnstream.load(path, backend="fused", threads=2, precision=mode)
    assert isinstance(model.backend, fused.FusedBackend) and model.backend.precision == mode
    inputs = feed(zoo, make_inputs(zoo, 12, seed=batch))
    assert_agrees_step_by_step(model, inputs, batch, model.step, precision=mode)


def test_torch_bf16_agrees_with_the_bf16_oracle(zoo_file: tuple[ZooModel, Path]) -> None:
    pytest.importorskip("torch")
    zoo, path = zoo_file
    model = rnnstream.load(path, backend="torch", precision="bf16")
    assert_agrees_step_by_step(model, feed(zoo, make_inputs(zoo, 12, seed=2)), zoo.batch, model.step,
                               precision="bf16")  # fmt: skip


@pytest.mark.parametrize("isa", ["avx2", "portable"])
def test_narrower_instruction_sets_agree_at_bf16(isa: str) -> None:
    """The AVX2 and portable builds' bf16 weights (their own lane widths, blocked path included). Rows of N(0, 0.5):
    at N(0, 1) a sum over 300 inputs (~100 in Σ|a·w|) is ~8e-6 from its exact value in float32 by the kernel and by
    NumPy, in either direction, and on a Zen 3, whose OpenBLAS sums in another order, one GRU output of 7,070 was
    1.2e-5 from the oracle's: float32's rounding, not an error of either."""
    if not fused.available():
        pytest.skip("the fused kernel is not built")
    code = (
        "import numpy as np, rnnstream\n"
        "from rnnstream.backends import fused\n"
        f"assert fused.instruction_set() == {isa!r}, fused.instruction_set()\n"
        "from tests.backends.test_fused import _layer, _single_layer_model\n"
        "from tests.backends.conformance import assert_agrees_step_by_step\n"
        "rng = np.random.default_rng(4)\n"
        "for kind in ('lstm', 'gru', 'simple_rnn', 'dense'):\n"
        "    for units, features, batch in ((7, 3, 1), (33, 3, 7), (70, 300, 101)):\n"
        "        model = _single_layer_model(_layer(kind, units, features, rng, 'tanh'), features)\n"
        "        model.set_backend('fused', precision='bf16')\n"
        "        xs = rng.normal(0, 0.5, (batch, 3, features)).astype(np.float32)\n"
        "        assert_agrees_step_by_step(model, xs, batch, model.step, precision='bf16')\n"
        "print('ok')\n"
    )
    env = {**os.environ, "RNNSTREAM_KERNEL_ISA": isa}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[2])  # fmt: skip
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_bf16_is_close_to_fp32_but_not_equal() -> None:
    if not fused.available():
        pytest.skip("the fused kernel is not built")
    model = rnnstream.load(rnnstream.demo.SEED_MODEL, precision="bf16")
    assert model.precision == "bf16" and model.backend.name == "fused"
    x = np.ones((3, 4), np.float32)
    y_bf16, _ = model.step(x, model.initial_state(3))
    y_fp32, _ = model.set_backend("fused", precision="fp32").step(x, model.initial_state(3))
    assert 0 < np.max(np.abs(y_bf16 - y_fp32)) < 1e-2  # rounded weights: close, not equal


def test_the_kernel_checks_bf16_weights_and_whole_steps() -> None:
    """make_plan takes uint16 (bfloat16) weights of the packed size only; step_all and bind check every
    array as step() does, so a wrong call is an error, never a bad read or write."""
    if not fused.available():
        pytest.skip("the fused kernel is not built")
    from rnnstream.backends import _fused  # type: ignore[attr-defined]

    rng = np.random.default_rng(5)
    W, b = rng.normal(0, 1, (3, 5)).astype(np.float32), rng.normal(0, 1, 5).astype(np.float32)
    lanes = _fused.isa()[1]
    p = packing.pack_act(W, b, lanes=lanes)
    weights = packing.bf16_pairs(p.weights, lanes)
    plan = _fused.make_plan(p.epilogue, p.activation, weights, p.bias, p.panels, 3, 0, 5, 0, -1)
    for bad in (weights[:-1], weights.astype(np.int32), weights.reshape(-1, 2)):
        with pytest.raises(ValueError):
            _fused.make_plan(p.epilogue, p.activation, bad, p.bias, p.panels, 3, 0, 5, 0, -1)
    x, state, out = np.ones((4, 3), np.float32), np.zeros((4, 0), np.float32), np.empty((4, 5), np.float32)
    _fused.step_all(((plan, x, out),), state, np.empty_like(state), 1)
    np.testing.assert_allclose(out, x @ round_bf16(W) + b, rtol=1e-6, atol=1e-6)
    bound = _fused.bind(((plan, x, out),), state, np.empty_like(state), 1)
    out[:] = 0
    _fused.run(bound)
    np.testing.assert_allclose(out, x @ round_bf16(W) + b, rtol=1e-6, atol=1e-6)
    for items in [((plan, x[:, :2], out),), ((plan, x, out[:3]),), ((plan, x),), ((x, x, out),)]:
        with pytest.raises((ValueError, TypeError)):
            _fused.step_all(items, state, np.empty_like(state), 1)
        with pytest.raises((ValueError, TypeError)):
            _fused.bind(items, state, np.empty_like(state), 1)


def test_a_launched_bf16_step_equals_its_step() -> None:
    if not fused.available():
        pytest.skip("the fused kernel is not built")
    model = rnnstream.load(rnnstream.demo.SEED_MODEL, precision="bf16")
    if not model.can_launch:
        pytest.skip("no launcher on this platform")
    x = np.random.default_rng(6).normal(0, 1, (300, 4)).astype(np.float32)
    state = model.initial_state(300)
    y, new_state = launched_step(model, x, state)
    y_step, state_step = model.step(x, state)
    assert np.array_equal(y, y_step) and new_state == state_step


def launched_step(model: rnnstream.StreamModel, x: np.ndarray, state: State) -> tuple[np.ndarray, State]:
    """``model.launch``'s outputs and new state, waited for on a pipe (the fd it signals when done)."""
    read, write = os.pipe()
    try:
        pending = model.launch(x, state, write)
        os.read(read, 8)
        y, new_state = pending.result()
    finally:
        os.close(read)
        os.close(write)
    assert isinstance(y, np.ndarray)
    return y, new_state


def _cpu_has(*flags: str) -> bool:
    try:
        listed = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return all(flag in listed for flag in flags)


def test_the_kernel_runs_bf16_dot_where_the_cpu_has_avx512_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel offers bf16-dot exactly where the CPU has AVX512_BF16, on AMX tiles where it has AMX;
    ``bf16`` means bf16-dot where AMX runs it or the CPU is an AMD one, else bf16-widen; RNNSTREAM_BF16
    decides instead."""
    if not fused.available() or fused.instruction_set() != "avx512":
        pytest.skip("the AVX-512 kernel is not built or not chosen")
    dot = _cpu_has("avx512_bf16", "avx512bw")
    assert fused.bf16_dot() == dot
    assert fused.bf16_amx() == (dot and _cpu_has("amx_bf16", "amx_tile"))
    assert fused.bf16_dot_fast() == (fused.bf16_amx() or (dot and _cpu_has("AuthenticAMD")))
    for wanted, expected in [
        (None, "bf16-dot" if fused.bf16_dot_fast() else "bf16-widen"),
        ("widen", "bf16-widen"),
        ("dot", "bf16-dot" if dot else "bf16-widen"),
    ]:
        if wanted is None:
            monkeypatch.delenv("RNNSTREAM_BF16", raising=False)
        else:
            monkeypatch.setenv("RNNSTREAM_BF16", wanted)
        model = rnnstream.load(rnnstream.demo.SEED_MODEL, backend="fused", precision="bf16")
        assert model.precision == "bf16" and model.backend.precision == expected, wanted
    assert concrete_precision("bf16", "numpy") == "bf16-widen"  # NumPy emulates bf16-dot only when asked


@pytest.mark.parametrize("amx", ["0", "1"])
def test_bf16_dot_by_vdpbf16ps_and_by_amx_at_every_batch_size(amx: str) -> None:
    """RNNSTREAM_AMX=0: vdpbf16ps at every batch size; =1: AMX tiles from batch 1 (by default from 8, as
    the in-process tests run). Both against the oracle, blocks of 32 rows and their remainders included."""
    if not fused.available() or not fused.bf16_dot():
        pytest.skip("this CPU has no AVX512_BF16")
    code = (
        "import numpy as np\n"
        "from rnnstream.backends import fused\n"
        f"assert fused.bf16_amx() == ({amx!r} == '1' and fused.bf16_amx()), fused.bf16_amx()\n"
        "from tests.backends.test_fused import _layer, _single_layer_model\n"
        "from tests.backends.conformance import assert_agrees_step_by_step\n"
        "rng = np.random.default_rng(8)\n"
        "for kind in ('lstm', 'gru', 'simple_rnn', 'dense'):\n"
        "    for units, features, batch in ((7, 3, 1), (33, 40, 9), (70, 300, 65)):\n"
        "        model = _single_layer_model(_layer(kind, units, features, rng, 'tanh'), features)\n"
        "        model.set_backend('fused', precision='bf16-dot', threads=2)\n"
        "        xs = rng.normal(0, 1, (batch, 3, features)).astype(np.float32)\n"
        "        assert_agrees_step_by_step(model, xs, batch, model.step, precision='bf16-dot')\n"
        "print('ok')\n"
    )
    env = {**os.environ, "RNNSTREAM_AMX": amx}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[2])  # fmt: skip
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


@pytest.mark.parametrize("kind", ["lstm", "gru", "simple_rnn", "dense"])
def test_bf16_dot_layers_of_every_size_agree_with_the_oracle(kind: str) -> None:
    """One layer, so its rows are the oracle's exactly: fp32's tolerance. Odd and even feature counts,
    more than 32 (a whole vector of pairs), 1 to 6-row tiles, one thread and two (rows paired by both)."""
    if not fused.available() or not fused.bf16_dot():
        pytest.skip("this CPU has no AVX512_BF16")
    assert_every_layer_size_agrees(kind, "bf16-dot", np.random.default_rng(7))


def assert_every_layer_size_agrees(kind: str, precision: str, rng: np.random.Generator) -> None:
    """One layer of ``kind`` at ``precision`` against the oracle, by model.step and by the bound stepper: 1 to 130
    units, 1 to 300 features (odd, even, whole vectors of pairs or quads and not), 1 to 101 rows, 1 and 2 threads."""
    for units, features, batch in ((1, 1, 1), (7, 3, 2), (17, 33, 5), (33, 64, 7), (65, 300, 101), (130, 31, 6)):
        model = _single_layer_model(_layer(kind, units, features, rng, "tanh"), features)
        for threads in (1, 2):
            model.set_backend("fused", precision=precision, threads=threads)
            xs = rng.normal(0, 1, (batch, 3, features)).astype(np.float32)
            assert_agrees_step_by_step(model, xs, batch, model.step, precision=precision)
            assert_agrees_step_by_step(model, xs, batch, _stepped(model, batch), precision=precision)


def _stepped(model: rnnstream.StreamModel, batch: int) -> Callable[[np.ndarray, State], tuple[np.ndarray, State]]:
    """model.stepper's step (one bound C call over its own buffers) from a given state."""
    stepper = model.stepper(batch)

    def step(x: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        stepper.state = state
        y = stepper(x)
        assert isinstance(y, np.ndarray)
        return y.copy(), stepper.state

    return step


def test_bf16_dot_is_checked() -> None:
    """dot weights of the wrong size are refused; where the CPU (or RNNSTREAM_KERNEL_ISA) rules AVX512_BF16
    out, bf16-dot is an error that says what to use, and bf16 widens."""
    if not fused.available():
        pytest.skip("the fused kernel is not built")
    from rnnstream.backends import _fused  # type: ignore[attr-defined]

    if fused.bf16_dot():
        lanes = _fused.isa()[1]
        ones = np.ones((5, 5), np.float32)
        p = packing.pack_act(ones[:3], ones[0], lanes=lanes, Wh=ones)
        weights = packing.bf16_dot_pairs(p.weights, 3, 5, lanes)
        _fused.make_plan(p.epilogue, p.activation, weights, p.bias, p.panels, 3, 5, 5, 0, -1, True)
        for bad in (packing.bf16_pairs(p.weights, lanes), p.weights, weights[:-1]):
            with pytest.raises(ValueError):
                _fused.make_plan(p.epilogue, p.activation, bad, p.bias, p.panels, 3, 5, 5, 0, -1, True)
    code = (
        "import rnnstream, pytest\n"
        "from rnnstream.backends import fused\n"
        "assert not fused.bf16_dot()\n"
        "with pytest.raises(rnnstream.InputError, match='AVX512_BF16'):\n"
        "    rnnstream.load(rnnstream.demo.SEED_MODEL, backend='fused', precision='bf16-dot')\n"
        "m = rnnstream.load(rnnstream.demo.SEED_MODEL, backend='fused', precision='bf16')\n"
        "assert m.backend.precision == 'bf16-widen'\n"
        "print('ok')\n"
    )
    env = {**os.environ, "RNNSTREAM_KERNEL_ISA": "avx2", "RNNSTREAM_BF16": "dot"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[2])  # fmt: skip
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
    with pytest.raises(rnnstream.InputError, match="torch"):
        concrete_precision("bf16-dot", "torch")


def test_a_device_batch_steps_bf16_as_the_torch_backend_does() -> None:
    """DeviceBatch computes on torch: ``bf16`` is the widen mode there, and an explicit ``bf16-dot`` (bfloat16
    rows, which torch does not emulate) is refused as on the torch backend rather than computed otherwise."""
    pytest.importorskip("torch")
    from rnnstream.device_batch import DeviceBatch

    oracle = rnnstream.load(rnnstream.demo.SEED_MODEL, backend="numpy", precision="bf16-widen")
    batch = DeviceBatch(rnnstream.load(rnnstream.demo.SEED_MODEL, precision="bf16"), 3, device="cpu")
    xs = np.random.default_rng(5).normal(size=(3, 4)).astype(np.float32)
    expected, _ = oracle.step(xs, oracle.initial_state(3))
    np.testing.assert_allclose(np.asarray(batch.step(xs)), np.asarray(expected), atol=1e-5)
    with pytest.raises(rnnstream.InputError, match="bf16-dot"):
        DeviceBatch(rnnstream.load(rnnstream.demo.SEED_MODEL, backend="numpy", precision="bf16-dot"), 1, device="cpu")
