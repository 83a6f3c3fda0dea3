"""precision: bfloat16 rounding as ml_dtypes does it, and a bf16 graph that rounds the weight matrices only."""

from __future__ import annotations

import numpy as np
import pytest

import rnnstream
from rnnstream import InputError
from rnnstream.layers.dense import Dense
from rnnstream.layers.recurrent import LSTM
from rnnstream.precision import at_precision, bf16_bits, round_bf16


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
