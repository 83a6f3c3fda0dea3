"""The fused kernel's gate math (gate_math.h) against float64: σ, tanh and an LSTM's σ(a)·tanh(b) within 2e-7.

The layers' input weights are the identity and their biases zero, so a gate's pre-activation is the input itself,
exactly; the sweep covers every region of the approximations: near 0, where the exponent's range reduction
switches n, the clamps at ±44 and ±87, and beyond.
"""

from __future__ import annotations

import numpy as np
import pytest

import rnnstream
from rnnstream.backends import fused
from rnnstream.graph import GraphBuilder
from rnnstream.layers.dense import Dense
from rnnstream.layers.layer import Layer, TensorSpec
from rnnstream.layers.recurrent import LSTM
from rnnstream.state import State

pytestmark = pytest.mark.skipif(not fused.available(), reason="the fused kernel is not built")

GATE_ERROR = 2e-7
"""The largest absolute error of σ, tanh and σ(a)·tanh(b) (gate_math.h's promise)."""


def _model(layer: Layer, features: int) -> rnnstream.StreamModel:
    g = GraphBuilder()
    x = g.add_input("x", TensorSpec((features,)))
    (y, *_) = g.add_node(layer.name, layer, [x])
    return rnnstream.StreamModel(g.build([y], ["y"]), backend="fused", threads=1)


def _sweep(count: int, seed: int) -> np.ndarray:
    """Pre-activations over [-100, 100]: dense near 0, every n of the range reduction, the clamps' edges."""
    rng = np.random.default_rng(seed)
    edges = np.array([0.0, 44.0, 87.0, 88.0, 1e4, 1e30, 3e-8, 1e-40], np.float32)
    edges = np.concatenate([edges, -edges])
    grid = np.concatenate(
        [
            rng.uniform(-1.0, 1.0, count),
            rng.uniform(-100.0, 100.0, count),
            np.arange(-130, 131) * np.log(2.0) / 2,  # where n changes, for e^{-x} and e^{-2x}
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
    model = _model(
        Dense("d", W=np.eye(units, dtype=np.float32), b=np.zeros(units, np.float32), activation=activation), units
    )
    y, _ = _step(model, rows, model.initial_state(len(rows)).rows, per_call)
    error = np.abs(np.asarray(y, np.float64) - exact(rows.astype(np.float64)))  # type: ignore[operator]
    assert error.max() <= GATE_ERROR, f"{activation}({rows.ravel()[error.argmax()]}) is {error.max():.2e} off"


@pytest.mark.parametrize("per_call", [5, 1000])
def test_the_lstm_gates_within_their_bound(per_call: int) -> None:
    """c' = σ(f)·c + σ(i)·tanh(g) and h' = σ(o)·tanh(c'), the kernel's σ(a)·tanh(b) in both, over every pair of
    regions of a and b: c' within 2e-7 times (1 + |c|) and its own rounding, h' within 2e-7 of σ(o)·tanh(c')
    from the kernel's c'."""
    units, rng = 96, np.random.default_rng(2)
    eye, zeros = np.eye(4 * units, dtype=np.float32), np.zeros((units, 4 * units), np.float32)
    model = _model(LSTM("l", Wx=eye, Wh=zeros, b=np.zeros(4 * units, np.float32)), 4 * units)
    for seed in range(3):
        z = _sweep(6_000, seed=10 + seed)
        batch = z.size // units
        gates = np.stack([rng.permutation(z)[: batch * units].reshape(batch, units) for _ in range(4)], axis=1)
        c = rng.uniform(-30.0, 30.0, (batch, units)).astype(np.float32)
        rows = np.zeros((batch, model.state_size), np.float32)
        rows[:, units : 2 * units] = c  # the state's h, then c
        y, new_rows = _step(model, gates.reshape(batch, 4 * units), rows, per_call)
        i, f, g, o = (gates[:, k].astype(np.float64) for k in range(4))
        c_exact = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
        c_ours = new_rows[:, units : 2 * units].astype(np.float64)
        c_error = np.abs(c_ours - c_exact)
        beyond = c_error - GATE_ERROR * (1.0 + np.abs(c)) - 6e-8 * np.abs(c_exact)
        assert (beyond <= 0).all(), (
            f"c' is {c_error.ravel()[beyond.argmax()]:.2e} off at c = {c.ravel()[beyond.argmax()]}"
        )
        h_exact = _sigmoid(o) * np.tanh(c_ours)  # from our c', so that c's own error is not counted twice
        h_error = np.abs(np.asarray(y, np.float64) - h_exact)
        assert h_error.max() <= GATE_ERROR, f"h' is {h_error.max():.2e} off"
