"""The fused kernel's gate math (gate_math.h) against float64: σ and tanh within 2e-7, an LSTM's σ(a)·tanh(b)
within 3e-7, NaN and ±inf as NumPy has them.

The layers' input weights are the identity and their biases zero, so a gate's pre-activation is the input itself,
exactly; the sweep covers every region of the approximations: near 0, where the exponent's range reduction
switches n, the clamps at ±44 and ±87, and beyond.
"""

from __future__ import annotations

import numpy as np
import pytest

import rnnstream
from rnnstream.backends import fused
from rnnstream.layers.dense import Dense
from rnnstream.layers.recurrent import GRU, LSTM
from rnnstream.state import State
from tests.backends.test_fused import _single_layer_model

pytestmark = pytest.mark.skipif(not fused.available(), reason="the fused kernel is not built")

GATE_ERROR = 2e-7
"""The largest absolute error of σ and tanh (gate_math.h's promise)."""

PRODUCT_ERROR = 3e-7
"""The largest absolute error of σ(a)·tanh(b) (gate_math.h: seen 2.6e-7 where the product is near ±1)."""


def _sweep(count: int, seed: int) -> np.ndarray:
    """Pre-activations over [-100, 100]: dense near 0, every n of the range reduction, the clamps' edges."""
    rng = np.random.default_rng(seed)
    edges = np.array([0.0, 44.0, 87.0, 88.0, 1e4, 1e30, 3e-8, 1e-40], np.float32)
    edges = np.concatenate([edges, -edges])
    grid = np.concatenate(
        [
            rng.uniform(-1.0, 1.0, count),
            rng.uniform(-100.0, 100.0, count),
            np.arange(-260, 261) * np.log(2.0) / 4,  # where n changes, for e^{-x} (odd multiples of ln2/2) and e^{-2x}
            np.nextafter(edges, np.float32(0.0)),
            edges,
        ]
    )
    return grid.astype(np.float32)


def _step(model: rnnstream.StreamModel, x: np.ndarray, rows: np.ndarray, per_call: int) -> tuple[np.ndarray, ...]:
    """Outputs and new state rows, ``per_call`` rows a call: 5 take the kernel's register tiles on every
    instruction set, 1,000 AVX2's and the portable build's blocked path (AVX-512 has no other)."""
    parts = [
        model.step(x[i : i + per_call], State(rows[i : i + per_call], model.fingerprint))
        for i in range(0, len(x), per_call)
    ]
    return np.concatenate([np.asarray(y) for y, _ in parts]), np.concatenate([s.rows for _, s in parts])


def _sigmoid(z: np.ndarray) -> np.ndarray:
    t = np.exp(-np.abs(z.astype(np.float64)))  # no overflow
    return np.asarray(np.where(z >= 0, 1.0 / (1.0 + t), t / (1.0 + t)), np.float64)


@pytest.mark.parametrize("per_call", [5, 1000])
@pytest.mark.parametrize(("activation", "exact"), [("sigmoid", _sigmoid), ("tanh", np.tanh)])
def test_sigmoid_and_tanh_within_their_bound(activation: str, exact: object, per_call: int) -> None:
    units = 200  # several panels, the last one part-filled
    z = _sweep(20_000, seed=1)
    rows = np.resize(z, (z.size // units + 1) * units).reshape(-1, units)
    model = _single_layer_model(
        Dense("d", W=np.eye(units, dtype=np.float32), b=np.zeros(units, np.float32), activation=activation), units
    )
    y, _ = _step(model, rows, model.initial_state(len(rows)).rows, per_call)
    error = np.abs(np.asarray(y, np.float64) - exact(rows.astype(np.float64)))  # type: ignore[operator]
    assert error.max() <= GATE_ERROR, f"{activation}({rows.ravel()[error.argmax()]}) is {error.max():.2e} off"


@pytest.mark.parametrize("per_call", [5, 1000])
def test_the_lstm_gates_within_their_bound(per_call: int) -> None:
    """c' = σ(f)·c + σ(i)·tanh(g) and h' = σ(o)·tanh(c'), the kernel's σ(a)·tanh(b) in both, over every pair of
    regions of a and b: c' within 2e-7 times |c|, 3e-7 and its own rounding, h' within 3e-7 of σ(o)·tanh(c')
    from the kernel's c'."""
    units, rng = 96, np.random.default_rng(2)
    eye, zeros = np.eye(4 * units, dtype=np.float32), np.zeros((units, 4 * units), np.float32)
    model = _single_layer_model(LSTM("l", Wx=eye, Wh=zeros, b=np.zeros(4 * units, np.float32)), 4 * units)
    for seed in range(3):
        z = _sweep(6_000, seed=10 + seed)
        batch = z.size // units
        gates = np.stack([rng.permutation(z)[: batch * units].reshape(batch, units) for _ in range(4)], axis=1)
        c = rng.uniform(-30.0, 30.0, (batch, units)).astype(np.float32)
        gates[0, :, 0], c[0, 0] = [-100.0, 100.0, 0.0, 4.85174799], -8.31956673  # c' = c, h' 2.6e-7 off
        rows = np.zeros((batch, model.state_size), np.float32)
        rows[:, units : 2 * units] = c  # the state's h, then c
        y, new_rows = _step(model, gates.reshape(batch, 4 * units), rows, per_call)
        i, f, g, o = (gates[:, k].astype(np.float64) for k in range(4))
        c_exact = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
        c_ours = new_rows[:, units : 2 * units].astype(np.float64)
        c_error = np.abs(c_ours - c_exact)
        beyond = c_error - GATE_ERROR * np.abs(c) - PRODUCT_ERROR - 6e-8 * np.abs(c_exact)
        assert (beyond <= 0).all(), (
            f"c' is {c_error.ravel()[beyond.argmax()]:.2e} off at c = {c.ravel()[beyond.argmax()]}"
        )
        h_exact = _sigmoid(o) * np.tanh(c_ours)  # from our c', so that c's own error is not counted twice
        h_error = np.abs(np.asarray(y, np.float64) - h_exact)
        assert h_error.max() <= PRODUCT_ERROR, f"h' is {h_error.max():.2e} off"


SPECIAL = np.array([np.nan, np.inf, -np.inf, 1e30, -1e30, 88.0, -88.0, 0.0], np.float32)
"""Pre-activations the sweep's identity weights cannot carry (inf·0 would make a whole row NaN): in the bias."""


@pytest.mark.parametrize("batch", [1, 5, 12, 300])
@pytest.mark.parametrize("activation", ["sigmoid", "tanh"])
def test_nan_and_infinities_in_dense_layers(batch: int, activation: str) -> None:
    """NaN stays NaN, σ(±inf) is 1 or 0, tanh(±inf) ±1: 8 units on the panel path, 4 and 3 on the narrow one (from
    8 rows, several rows' units in one vector); the weights are zero, so each pre-activation is its bias."""
    x = np.random.default_rng(batch).normal(0.0, 1.0, (batch, 3)).astype(np.float32)
    for bias in (SPECIAL, SPECIAL[:4], SPECIAL[4:], SPECIAL[:3]):
        model = _single_layer_model(
            Dense("d", W=np.zeros((3, bias.size), np.float32), b=bias, activation=activation), 3
        )
        y, _ = model.step(x, model.initial_state(batch))
        exact = _sigmoid(bias) if activation == "sigmoid" else np.tanh(bias.astype(np.float64))
        np.testing.assert_allclose(
            y, np.broadcast_to(exact, (batch, bias.size)), atol=GATE_ERROR, rtol=0, equal_nan=True
        )


@pytest.mark.parametrize("batch", [1, 5, 12, 300])
def test_nan_and_infinities_in_lstm_and_gru_gates(batch: int) -> None:
    """The same in every gate of an LSTM (c' and h') and of a GRU (z, r and n: its recurrent bias finite, as the
    kernel's σ(-inf) is 1.6e-38, not 0, so r·inf would be inf where NumPy has NaN)."""
    rng, units = np.random.default_rng(batch), 8
    x = rng.normal(0.0, 1.0, (batch, 3)).astype(np.float32)
    b = np.resize(SPECIAL, 4 * units)
    lstm = LSTM("l", Wx=np.zeros((3, 4 * units), np.float32), Wh=np.zeros((units, 4 * units), np.float32), b=b)
    c = rng.uniform(-3.0, 3.0, (batch, units)).astype(np.float32)
    model = _single_layer_model(lstm, 3)
    y, state = model.step(x, State(np.concatenate([np.zeros_like(c), c], axis=1), model.fingerprint))
    i, f, g, o = (b[k * units : (k + 1) * units].astype(np.float64) for k in range(4))
    c_exact = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
    np.testing.assert_allclose(
        state.rows[:, units:], c_exact, atol=4 * GATE_ERROR + PRODUCT_ERROR, rtol=0, equal_nan=True
    )
    np.testing.assert_allclose(y, _sigmoid(o) * np.tanh(c_exact), atol=1e-6, rtol=0, equal_nan=True)
    bx, bh = np.resize(SPECIAL, 3 * units), rng.normal(0.0, 3.0, 3 * units).astype(np.float32)
    gru = GRU(
        "g",
        Wx=np.zeros((3, 3 * units), np.float32),
        Wh=np.zeros((units, 3 * units), np.float32),
        bx=bx,
        bh=bh,
        reset_after=True,
    )
    h = rng.uniform(-1.0, 1.0, (batch, units)).astype(np.float32)
    model = _single_layer_model(gru, 3)
    y, _ = model.step(x, State(h, model.fingerprint))
    with np.errstate(invalid="ignore"):  # NaN - NaN
        z, r = _sigmoid(bx[:units] + bh[:units]), _sigmoid(bx[units : 2 * units] + bh[units : 2 * units])
        n = np.tanh(bx[2 * units :].astype(np.float64) + r * bh[2 * units :])
        h_exact = z * h + (1.0 - z) * n
    np.testing.assert_allclose(y, h_exact, atol=3 * GATE_ERROR, rtol=0, equal_nan=True)
