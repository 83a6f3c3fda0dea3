"""A small two-output model built straight from canonical layers (no Keras), and its test inputs."""

from __future__ import annotations

import numpy as np

from rnnstream import StreamModel
from rnnstream.graph import GraphBuilder
from rnnstream.layers.dense import Dense
from rnnstream.layers.layer import TensorSpec
from rnnstream.layers.recurrent import GRU, LSTM


def small_model(seed: int = 0) -> StreamModel:
    """A two-output model (LSTM → Dense(2), and a GRU's state) built straight from canonical layers."""
    rng = np.random.default_rng(seed)

    def w(*shape: int) -> np.ndarray:
        return rng.normal(0, 0.5, shape).astype(np.float32)

    g = GraphBuilder()
    x = g.add_input("x", TensorSpec((3,)))
    (h,) = g.add_node("lstm", LSTM("lstm", Wx=w(3, 24), Wh=w(6, 24), b=w(24)), [x])
    (y,) = g.add_node("dense", Dense("dense", W=w(6, 2), b=w(2), activation="tanh"), [h])
    (z,) = g.add_node("gru", GRU("gru", Wx=w(6, 9), Wh=w(3, 9), bx=w(9), bh=w(9), reset_after=True,
                                 return_sequences=False), [h])
    return StreamModel(g.build([y, z], ["dense", "gru"]), name="small")


def inputs(seed: int, T: int, n: int = 1) -> np.ndarray:
    """Random inputs ``[n, T, 3]`` for the small model."""
    return np.random.default_rng(seed).normal(0, 1, (n, T, 3)).astype(np.float32)
