"""int8 weights (rnnstream.precision): the fused kernel's AVX512_VNNI and AVX2 paths against the NumPy oracle at
int8 (the same quantized weights, the same 8-bit rows, exact integer sums), step by step, on every zoo model and
layer shape; the largest products, where AVX2's 16-bit pair sums are fullest; the kernel's checks; where it cannot
run, a clear error."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import rnnstream
from rnnstream.backends import concrete_precision, fused, packing
from rnnstream.layers.dense import Dense
from tests.backends.conformance import assert_agrees_step_by_step
from tests.backends.test_bf16 import _cpu_has, assert_every_layer_size_agrees, launched_step
from tests.backends.test_fused import _layer, _single_layer_model
from tests.zoo import ZooModel, feed, make_inputs

needs_int8 = pytest.mark.skipif(
    not fused.available() or not fused.int8(), reason="the fused kernel is not built or has no int8 path here"
)


@needs_int8
@pytest.mark.parametrize("batch", [1, 37])
def test_fused_int8_agrees_with_the_int8_oracle(zoo_file: tuple[ZooModel, Path], batch: int) -> None:
    """Every zoo model: within the fp32 tolerance but for rare rows rounded apart, and those within FLIP_SIZE
    of the output scale (conformance.assert_close)."""
    zoo, path = zoo_file
    zoo = dataclasses.replace(zoo, batch=batch)
    model = rnnstream.load(path, backend="fused", threads=2, precision="int8")
    assert isinstance(model.backend, fused.FusedBackend) and model.backend.precision == "int8"
    inputs = feed(zoo, make_inputs(zoo, 12, seed=batch))
    assert_agrees_step_by_step(model, inputs, batch, model.step, precision="int8")


@needs_int8
def test_a_stacked_model_at_a_large_batch_agrees_with_the_oracle() -> None:
    """The seed model (LSTM, LSTM, Dense) at 300 rows: rows quantized by two threads, and the second layer's
    rows computed by the first, so a few of them round apart (the flips conformance.assert_close allows)."""
    model = rnnstream.load(rnnstream.demo.SEED_MODEL, backend="fused", threads=2, precision="int8")
    xs = np.random.default_rng(11).normal(0, 1, (300, 6, 4)).astype(np.float32)
    assert_agrees_step_by_step(model, xs, 300, model.step, precision="int8")


@needs_int8
@pytest.mark.parametrize("kind", ["lstm", "gru", "simple_rnn", "dense"])
def test_int8_layers_of_every_size_agree_with_the_oracle(kind: str) -> None:
    """One layer, so its rows are the oracle's exactly: fp32's tolerance. Feature counts that fill whole quads
    and ones that do not, more than 16 (a whole vector of them), 1 to 6-row tiles, last panels partly used,
    one thread and two (rows quantized by both), model.step and the bound stepper."""
    assert_every_layer_size_agrees(kind, "int8", np.random.default_rng(9))


@needs_int8
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_the_largest_products_sum_exactly(sign: float) -> None:
    """Every weight of a column and every input at the same magnitude: each quantizes to ±127 and every product is
    ±127², so AVX2's pairs of products reach ±32,258 in their 16-bit lanes (vpmaddubsw saturates at ±32,767, a
    row stored + 128 would pass it); 1,100 inputs, so the int32 sums pass 2^24 (float32's exact integers). The
    outputs are the exact sums."""
    rng = np.random.default_rng(6)
    features, units = 1_100, 20
    signs = rng.choice([-1.0, 1.0], size=features).astype(np.float32)
    column = np.arange(1, units + 1, dtype=np.float32) / 8
    dense = Dense("d", W=signs[:, None] * column[None, :], b=np.zeros(units, np.float32), activation="linear")
    model = _single_layer_model(dense, features)
    model.set_backend("fused", precision="int8", threads=1)
    x = (sign * 2.0 * signs)[None, :].repeat(7, axis=0)  # 7 rows: a tile of 3, of 3 and of 1
    y, _ = model.step(x, model.initial_state(7))
    np.testing.assert_allclose(y, np.broadcast_to(sign * features * 2.0 * column, y.shape), rtol=1e-6)


@needs_int8
def test_a_row_holding_nan_or_inf_gives_nan_in_its_own_outputs_only() -> None:
    """As the oracle: a part with a value that is not finite has no scale, so that row's outputs are NaN; the
    batch's other rows are untouched."""
    model = rnnstream.load(rnnstream.demo.SEED_MODEL, backend="fused", precision="int8")
    oracle = rnnstream.load(rnnstream.demo.SEED_MODEL, backend="numpy", precision="int8")
    x = np.random.default_rng(3).normal(size=(4, 4)).astype(np.float32)
    x[1, 2], x[2, 0] = np.nan, np.inf
    x[3] = [1e-38, 0, -3e-37, 0]  # so small that 127 / max overflows: zeros, in both
    y, state = model.step(x, model.initial_state(4))
    y_oracle, _ = oracle.step(x, oracle.initial_state(4))
    assert np.isnan(y[1:3]).all() and np.isnan(state.rows[1:3]).all()
    np.testing.assert_allclose(y[[0, 3]], y_oracle[[0, 3]], rtol=1e-5, atol=1e-5)
    zeros, _ = model.step(np.zeros((1, 4), np.float32), model.initial_state(1))
    assert np.array_equal(y[3], zeros[0])


def test_a_layer_too_wide_for_int32_sums_runs_its_numpy_step() -> None:
    """A part of more than 133,000 inputs would overflow the kernel's int32 sums: that node is NumPy's, at int8."""
    if not fused.available() or not fused.int8():
        pytest.skip("the kernel has no int8 path here")
    features = packing.INT8_MAX_INPUTS + 1
    model = _single_layer_model(_layer("dense", 2, features, np.random.default_rng(4), "tanh"), features)
    model.set_backend("fused", precision="int8")
    assert isinstance(model.backend, fused.FusedBackend) and model.backend.fused_nodes == []
    x = np.random.default_rng(5).normal(size=(2, features)).astype(np.float32)
    oracle = rnnstream.StreamModel(model.graph, backend="numpy", precision="int8")
    np.testing.assert_array_equal(model.step(x, model.initial_state(2))[0], oracle.step(x, oracle.initial_state(2))[0])


def test_int8_is_close_to_fp32_but_not_equal() -> None:
    """Quantized weights and rows: outputs near fp32's (the drift bench measures how near over 10,000 steps)."""
    backend = "fused" if fused.available() and fused.int8() else "numpy"
    model = rnnstream.load(rnnstream.demo.SEED_MODEL, backend=backend, precision="int8")
    assert model.precision == "int8"
    x = np.random.default_rng(2).normal(size=(3, 4)).astype(np.float32)
    y_int8, _ = model.step(x, model.initial_state(3))
    y_fp32, _ = model.set_backend(backend, precision="fp32").step(x, model.initial_state(3))
    assert 0 < np.max(np.abs(y_int8 - y_fp32)) < 1e-2


@needs_int8
def test_the_kernel_checks_int8_weights() -> None:
    """make_plan takes int8 weights of the packed size with their quant words only; a launched and a bound
    int8 step equal model.step."""
    from rnnstream.backends import _fused  # type: ignore[attr-defined]

    lanes = _fused.isa()[1]
    ones = np.ones((5, 5), np.float32)
    p = packing.pack_act(ones[:3], ones[0], lanes=lanes, Wh=ones)
    weights, quant = packing.int8_quads(p.weights, 3, 5, lanes)
    _fused.make_plan(p.epilogue, p.activation, weights, p.bias, p.panels, 3, 5, 5, 0, -1, False, quant)
    bad_calls = [(weights[:-1], quant), (weights, quant[:-1]), (weights, None), (weights, quant.astype(np.float32)),
                 (p.weights, quant), (weights.view(np.uint8), quant)]  # fmt: skip
    for bad_weights, bad_quant in bad_calls:
        with pytest.raises(ValueError):
            _fused.make_plan(p.epilogue, p.activation, bad_weights, p.bias, p.panels, 3, 5, 5, 0, -1, False, bad_quant)
    model = rnnstream.load(rnnstream.demo.SEED_MODEL, backend="fused", precision="int8")
    x = np.random.default_rng(6).normal(0, 1, (300, 4)).astype(np.float32)
    state = model.initial_state(300)
    y_step, state_step = model.step(x, state)
    if model.can_launch:
        y, new_state = launched_step(model, x, state)
        assert np.array_equal(y, y_step) and new_state == state_step
    stepper = model.stepper(300)
    stepper.state = state
    assert np.array_equal(stepper(x), y_step)


def test_int8_where_the_kernel_cannot_run_it_is_an_error_that_says_what_to_use() -> None:
    """The kernel offers int8 where the CPU has AVX512_VNNI (AVX-512 chosen) or AVX2 (AVX2 chosen); the portable
    build does not, and asking it names the instruction sets and the alternatives; torch does not compute it; NumPy
    emulates it."""
    if not fused.available():
        pytest.skip("the fused kernel is not built")
    if fused.instruction_set() == "avx512":
        assert fused.int8() == _cpu_has("avx512_vnni", "avx512bw")
    if fused.instruction_set() == "avx2":
        assert fused.int8()
    code = (
        "import rnnstream, pytest\n"
        "from rnnstream.backends import fused\n"
        "assert not fused.int8()\n"
        "with pytest.raises(rnnstream.InputError, match='int8 needs AVX2 or AVX512_VNNI'):\n"
        "    rnnstream.load(rnnstream.demo.SEED_MODEL, backend='fused', precision='int8')\n"
        "print('ok')\n"
    )
    assert_prints_ok_under("portable", code)
    with pytest.raises(rnnstream.InputError, match="torch backend does not compute int8"):
        concrete_precision("int8", "torch")
    assert concrete_precision("int8", "numpy") == "int8"


def test_the_avx2_copy_agrees_with_the_oracle_at_int8() -> None:
    """Under RNNSTREAM_KERNEL_ISA=avx2 (on an AVX-512 CPU too): every layer kind and size, and the largest
    products."""
    if not fused.available() or not _cpu_has("avx2", "fma"):
        pytest.skip("the fused kernel is not built or this CPU has no AVX2")
    code = (
        "import numpy as np\n"
        "from rnnstream.backends import fused\n"
        "assert fused.instruction_set() == 'avx2' and fused.int8()\n"
        "from tests.backends.test_bf16 import assert_every_layer_size_agrees\n"
        "from tests.backends.test_int8 import test_the_largest_products_sum_exactly\n"
        "for kind in ('lstm', 'gru', 'simple_rnn', 'dense'):\n"
        "    assert_every_layer_size_agrees(kind, 'int8', np.random.default_rng(9))\n"
        "test_the_largest_products_sum_exactly(1.0)\n"
        "test_the_largest_products_sum_exactly(-1.0)\n"
        "print('ok')\n"
    )
    assert_prints_ok_under("avx2", code, timeout=600)


def assert_prints_ok_under(isa: str, code: str, timeout: int = 300) -> None:
    """``code``, run by a fresh Python whose kernel takes RNNSTREAM_KERNEL_ISA=isa (chosen at import), prints ok."""
    env = {**os.environ, "RNNSTREAM_KERNEL_ISA": isa}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=timeout,
                          cwd=Path(__file__).resolve().parents[2])  # fmt: skip
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
