"""bf16 weights on every backend against the oracle at bf16 (the same rounded weights, float32 sums):
within the fp32 tolerance, step by step, on every zoo model."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import rnnstream
from rnnstream.backends import fused, packing
from rnnstream.precision import round_bf16
from tests.backends.conformance import assert_agrees_step_by_step
from tests.zoo import ZooModel, feed, make_inputs


@pytest.mark.parametrize("batch", [1, 37])
def test_fused_bf16_agrees_with_the_bf16_oracle(zoo_file: tuple[ZooModel, Path], batch: int) -> None:
    if not fused.available():
        pytest.skip("the fused kernel is not built")
    zoo, path = zoo_file
    zoo = dataclasses.replace(zoo, batch=batch)
    model = rnnstream.load(path, backend="fused", threads=2, precision="bf16")
    assert isinstance(model.backend, fused.FusedBackend) and model.backend.bf16
    inputs = feed(zoo, make_inputs(zoo, 12, seed=batch))
    assert_agrees_step_by_step(model, inputs, batch, model.step, precision="bf16")


def test_torch_bf16_agrees_with_the_bf16_oracle(zoo_file: tuple[ZooModel, Path]) -> None:
    pytest.importorskip("torch")
    zoo, path = zoo_file
    model = rnnstream.load(path, backend="torch", precision="bf16")
    assert_agrees_step_by_step(model, feed(zoo, make_inputs(zoo, 12, seed=2)), zoo.batch, model.step,
                               precision="bf16")  # fmt: skip


@pytest.mark.parametrize("isa", ["avx2", "portable"])
def test_narrower_instruction_sets_agree_at_bf16(isa: str) -> None:
    """The AVX2 and portable builds' bf16 weights (their own lane widths, blocked path included)."""
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
        "        xs = rng.normal(0, 1, (batch, 3, features)).astype(np.float32)\n"
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
    read, write = os.pipe()
    try:
        pending = model.launch(x, state, write)
        os.read(read, 8)
        y, new_state = pending.result()
    finally:
        os.close(read)
        os.close(write)
    y_step, state_step = model.step(x, state)
    assert np.array_equal(y, y_step) and new_state == state_step
