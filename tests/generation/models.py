"""Small models built in code for the generation tests: token models and a forecaster, seeded weights."""

from __future__ import annotations

import numpy as np

from rnnstream.graph import GraphBuilder
from rnnstream.layers.dense import Dense, Embedding
from rnnstream.layers.layer import TensorSpec
from rnnstream.layers.recurrent import GRU, LSTM
from rnnstream.model import StreamModel


def _w(rng: np.random.Generator, *shape: int, scale: float = 1.0) -> np.ndarray:
    return (rng.normal(0.0, scale / np.sqrt(shape[0]), shape)).astype(np.float32)


def token_model(vocabulary: int = 12, units: int = 16, *, softmax: bool = False, seed: int = 0,
                backend: str = "numpy") -> StreamModel:
    """Embedding(V, 8) → LSTM(units) → Dense(V): logits, or probabilities with ``softmax``."""
    rng = np.random.default_rng(seed)
    g = GraphBuilder()
    x = g.add_input("ids", TensorSpec((), dtype="int64"))
    (e,) = g.add_node("embedding", Embedding("embedding", E=_w(rng, vocabulary, 8, scale=3.0), mask_zero=False), [x])
    (h,) = g.add_node("lstm", LSTM("lstm", Wx=_w(rng, 8, 4 * units, scale=2.0), Wh=_w(rng, units, 4 * units, scale=2.0),
                                   b=_w(rng, 4 * units)), [e])
    (y,) = g.add_node("scores", Dense("scores", W=_w(rng, units, vocabulary, scale=4.0), b=_w(rng, vocabulary),
                                      activation="softmax" if softmax else "linear"), [h])
    return StreamModel(g.build([y], ["scores"]), name="tokens", source="built in", backend=backend)


def forecaster(features: int = 3, outputs: int = 2, units: int = 8, seed: int = 0) -> StreamModel:
    """x (features) → GRU(units) → Dense(outputs), linear: a small real-valued rollout model."""
    rng = np.random.default_rng(seed)
    g = GraphBuilder()
    x = g.add_input("x", TensorSpec((features,)))
    (h,) = g.add_node("gru", GRU("gru", Wx=_w(rng, features, 3 * units), Wh=_w(rng, units, 3 * units),
                                 bx=_w(rng, 3 * units), bh=_w(rng, 3 * units), reset_after=True), [x])
    (y,) = g.add_node("y", Dense("y", W=_w(rng, units, outputs), b=_w(rng, outputs), activation="tanh"), [h])
    return StreamModel(g.build([y], ["y"]), name="forecaster", source="built in", backend="numpy")
