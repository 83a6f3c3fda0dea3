"""The seed blog's experiment (shared/seeds/001_…): LSTM(100) → LSTM(200) → Dense(1, sigmoid), batch
10, 4 features. Keras' classic full-context predictions, Keras' stateful model stepped one step at a
time, and rnnstream's steps all agree."""

from __future__ import annotations

import numpy as np
import pytest

import rnnstream

keras = pytest.importorskip("keras")

BATCH, LENGTH, FEATURES = 10, 40, 4


def blog_model(stateful: bool) -> object:
    L = keras.layers
    inp = L.Input((None, FEATURES), batch_size=BATCH if stateful else None)
    x = L.LSTM(100, return_sequences=True, stateful=stateful)(inp)
    x = L.LSTM(200, stateful=stateful)(x)
    return keras.Model(inp, L.Dense(1, activation="sigmoid")(x))


def test_classic_stateful_and_rnnstream_agree(tmp_path: object) -> None:
    keras.utils.set_random_seed(0)
    X = np.random.default_rng(0).uniform(0, 1, (BATCH, LENGTH, FEATURES)).astype(np.float32)
    classic_model = blog_model(stateful=False)
    stateful_model = blog_model(stateful=True)
    stateful_model.set_weights(classic_model.get_weights())

    classic = np.stack([np.asarray(classic_model(X[:, :i]))[:, 0] for i in range(1, LENGTH + 1)], axis=1)
    stateful = np.stack([np.asarray(stateful_model(X[:, i : i + 1]))[:, 0] for i in range(LENGTH)], axis=1)

    stream_model = rnnstream.from_keras(classic_model)
    state = stream_model.initial_state(BATCH)
    steps = []
    for i in range(LENGTH):
        y, state = stream_model.step(X[:, i], state)
        steps.append(y[:, 0])
    ours = np.stack(steps, axis=1)

    np.testing.assert_allclose(stateful, classic, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ours, classic, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ours, stateful, rtol=1e-5, atol=1e-5)


def test_bundled_seed_model_equals_keras() -> None:
    model = keras.models.load_model(rnnstream.demo.SEED_MODEL)
    stream_model = rnnstream.load(rnnstream.demo.SEED_MODEL)
    X = np.random.default_rng(1).normal(0, 1, (BATCH, 25, FEATURES)).astype(np.float32)
    ys, _ = stream_model.run(X, stream_model.initial_state(BATCH))
    np.testing.assert_allclose(ys[:, -1], np.asarray(model(X)), rtol=1e-5, atol=1e-5)
