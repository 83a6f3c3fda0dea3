"""precision: bfloat16 rounding as ml_dtypes does it, and a bf16 graph that rounds the weight matrices only;
int8 quantization (per column for the weights, per row and step for what they multiply) and its oracle."""

from __future__ import annotations

import numpy as np
import pytest

import rnnstream
from rnnstream import InputError
from rnnstream.layers.dense import Dense
from rnnstream.layers.recurrent import LSTM
from rnnstream.precision import Int8Operand, at_int8, at_precision, bf16_bits, int8_columns, int8_rows, round_bf16


def test_rounding_is_ml_dtypes_bfloat16(rng: np.random.Generator) -> None:
    ml_dtypes = pytest.importorskip("ml_dtypes")
    mantissas = rng.normal(0, 1, 20_000).astype(np.float32)
    scales = np.float32(2.0) ** rng.integers(-140, 127, 20_000).astype(np.float32)
    ties = np.array([1 + 2**-8, 1 + 3 * 2**-8, -(1 + 2**-8), 2**-130 * 3], np.float32)  # halfway: to even
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 3.4e38, -3.4e38, 1e-45], np.float32)
    values = np.concatenate([mantissas * scales, ties, special])
    with np.errstate(over="ignore", invalid="ignore"):
        expected = values.astype(ml_dtypes.bfloat16).astype(np.float32)
    np.testing.assert_array_equal(round_bf16(values), expected)
    np.testing.assert_array_equal(bf16_bits(values[:-8]), expected[:-8].view(np.uint32) >> 16)


def test_bf16_rounds_the_weight_matrices_only() -> None:
    model = rnnstream.load(rnnstream.demo.SEED_MODEL, backend="numpy")
    assert at_precision(model.graph, "fp32") is model.graph
    rounded = at_precision(model.graph, "bf16")
    for before, after in zip(model.graph.nodes, rounded.nodes, strict=True):
        old, new = before.layer, after.layer
        assert isinstance(old, LSTM | Dense) and type(new) is type(old) and new is not old
        for name, value in old.params().items():
            if name in ("W", "Wx", "Wh"):
                np.testing.assert_array_equal(new.params()[name], round_bf16(value))
                assert not np.array_equal(new.params()[name], value)
            else:
                assert new.params()[name] is value  # biases stay float32
    assert model.graph.nodes[0].layer.params()["Wx"].dtype == np.float32  # the model's own graph untouched


def test_states_and_fingerprints_do_not_depend_on_precision() -> None:
    fp32 = rnnstream.load(rnnstream.demo.SEED_MODEL)
    bf16 = rnnstream.load(rnnstream.demo.SEED_MODEL, precision="bf16")
    assert fp32.fingerprint == bf16.fingerprint
    x = np.ones((2, 4), np.float32)
    _, state = fp32.step(x, fp32.initial_state(2))
    bf16.step(x, state)  # a state of one precision steps on at the other


def test_an_unknown_precision_names_the_known_ones() -> None:
    with pytest.raises(InputError, match=r"unknown precision 'int4'.*fp32, bf16"):
        rnnstream.load(rnnstream.demo.SEED_MODEL, precision="int4")
    with pytest.raises(InputError, match="unknown precision"):
        rnnstream.load(rnnstream.demo.SEED_MODEL).set_backend("numpy", precision="fp16")


def test_set_backend_keeps_the_precision_unless_told() -> None:
    model = rnnstream.load(rnnstream.demo.SEED_MODEL, backend="numpy", precision="bf16")
    assert model.set_backend("numpy").precision == "bf16"
    assert model.set_backend("numpy", precision="fp32").precision == "fp32"


def test_the_oracle_sums_the_quantized_products_exactly(rng: np.random.Generator) -> None:
    """Int8Operand's product is the exact integer sum of the 8-bit rows and weights, scaled back; quantizing
    its weights again gives the same int8 values (what packing.int8_quads does with them)."""
    w = rng.normal(0, 1, (37, 5)).astype(np.float32)
    a = rng.normal(0, 3, (4, 37)).astype(np.float32)
    q_w, s_w = int8_columns(w)
    wq = at_int8(w)
    again, s_again = int8_columns(wq)
    assert np.array_equal(again, q_w) and np.allclose(s_again, s_w, rtol=1e-6)
    assert np.abs(q_w).max(axis=0).tolist() == [127] * 5
    qa, sa = int8_rows(a)
    assert np.abs(qa).max(axis=1).tolist() == [127] * 4 and np.array_equal(qa, np.rint(qa))
    exact = qa.astype(np.int64) @ q_w.astype(np.int64)
    np.testing.assert_allclose(a @ wq, exact * sa * s_w, rtol=1e-6)
    np.testing.assert_allclose(a @ wq, a @ w, rtol=0, atol=0.05 * np.abs(a @ w).max())


def test_int8_quantizes_the_weight_matrices_only() -> None:
    model = rnnstream.load(rnnstream.demo.SEED_MODEL, backend="numpy")
    quantized = at_precision(model.graph, "int8")
    for before, after in zip(model.graph.nodes, quantized.nodes, strict=True):
        for name, value in before.layer.params().items():
            new = after.layer.params()[name]
            if name in ("W", "Wx", "Wh"):
                assert isinstance(new, Int8Operand) and new.shape == value.shape
                q, scale = int8_columns(value)
                np.testing.assert_array_equal(np.asarray(new), q.astype(np.float32) * scale)
                assert np.abs(np.asarray(new) - value).max() <= np.abs(value).max() / 254 * 1.001  # half a step
            else:
                assert new is value


def test_int8_rows_and_columns_edge_cases() -> None:
    """Zeros (and values below 3.7e-37) quantize to zeros with scale 0; an empty row has scale 0; inf or NaN in a
    row makes its scale NaN (so its products are NaN), the other rows untouched; ties round to even, as the
    kernel's vcvtps2dq."""
    q, scale = int8_columns(np.zeros((3, 2), np.float32))
    assert q.tolist() == [[0, 0]] * 3 and scale.tolist() == [0.0, 0.0]
    rows = np.array([[0.0, 0.0], [1.0, np.nan], [np.inf, 1.0], [254.0, 1.0], [1e-38, -3e-37]], np.float32)
    q_rows, s_rows = int8_rows(rows)
    assert s_rows[0, 0] == 0 and np.isnan(s_rows[1:3]).all() and s_rows[3, 0] == 2.0
    assert q_rows[4].tolist() == [0.0, 0.0] and s_rows[4, 0] == 0  # 127 / 3e-37 overflows: taken as zeros
    assert q_rows[0].tolist() == [0.0, 0.0] and q_rows[3].tolist() == [127.0, 0.0]  # 0.5 rounds to 0 (even)
    assert int8_rows(np.zeros((2, 0), np.float32))[1].tolist() == [[0.0], [0.0]]
    y = rows @ at_int8(np.eye(2, dtype=np.float32))
    assert np.isnan(y[1:3]).all() and np.isfinite(y[[0, 3, 4]]).all()
