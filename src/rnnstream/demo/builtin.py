"""Models built in code, by name, for serving and benchmarks: ``builtin:identity`` and ``builtin:large``.

- ``identity``: 4 features in, the same 4 out, no state: what is left is the server's own cost.
- ``large``: 2 × LSTM(512) over 128 features → Dense(1), fixed random weights: a model whose engine
  call dominates, where batching pays.

>>> build("identity").state_size, build("large").state_size
(0, 2048)
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from rnnstream.errors import ModelFileError
from rnnstream.graph import GraphBuilder
from rnnstream.layers.dense import Dense, Identity
from rnnstream.layers.layer import TensorSpec
from rnnstream.layers.recurrent import LSTM
from rnnstream.model import StreamModel

PREFIX = "builtin:"


def identity() -> StreamModel:
    g = GraphBuilder()
    x = g.add_input("input", TensorSpec((4,)))
    (y,) = g.add_node("output", Identity("output"), [x])
    return StreamModel(g.build([y], ["output"]), name="identity", source="built in")


def large(features: int = 128, units: int = 512, seed: int = 0) -> StreamModel:
    rng = np.random.default_rng(seed)

    def w(*shape: int) -> np.ndarray:
        return rng.normal(0.0, 1.0 / np.sqrt(shape[0]), shape).astype(np.float32)

    g = GraphBuilder()
    x = g.add_input("input", TensorSpec((features,)))
    (h1,) = g.add_node("lstm1", LSTM("lstm1", Wx=w(features, 4 * units), Wh=w(units, 4 * units), b=w(4 * units)), [x])
    (h2,) = g.add_node("lstm2", LSTM("lstm2", Wx=w(units, 4 * units), Wh=w(units, 4 * units), b=w(4 * units),
                                     return_sequences=False), [h1])
    (y,) = g.add_node("output", Dense("output", W=w(units, 1), b=w(1), activation="sigmoid"), [h2])
    return StreamModel(g.build([y], ["output"]), name="large", source="built in")


BUILDERS: dict[str, Callable[[], StreamModel]] = {"identity": identity, "large": large}


def build(name: str) -> StreamModel:
    """The built-in model ``name`` (with or without the ``builtin:`` prefix)."""
    key = name.removeprefix(PREFIX)
    if key not in BUILDERS:
        raise ModelFileError(f"no built-in model {name!r}; built-in models: {', '.join(sorted(BUILDERS))}")
    return BUILDERS[key]()
