"""Every zoo model, built in real Keras 3 with random weights and saved as .keras and as legacy .h5:
rnnstream's step-by-step outputs equal Keras' full-sequence outputs within 1e-5, for T = 1, 7, 100."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import rnnstream
from tests.zoo import ZOO, ZooModel, feed, keras_outputs, make_inputs, randomize

keras = pytest.importorskip("keras")

LENGTHS = (1, 7, 100)
TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}


@pytest.fixture(scope="module", params=ZOO, ids=lambda z: z.name)
def built(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[ZooModel, Any, Path]:
    zoo: ZooModel = request.param
    keras.utils.set_random_seed(7)
    model = zoo.build(keras)
    randomize(model, seed=hash(zoo.name) % 2**32)
    folder = tmp_path_factory.mktemp(zoo.name)
    model.save(folder / "model.keras")
    model.save(folder / "model.h5")
    return zoo, model, folder


def assert_matches_keras(stream_model: rnnstream.StreamModel, zoo: ZooModel, model: Any, T: int) -> None:
    xs = make_inputs(zoo, T, seed=T)
    expected = keras_outputs(model, zoo, xs)
    ys, state = stream_model.run(feed(zoo, xs), stream_model.initial_state(zoo.batch))
    got = ys if isinstance(ys, list) else [ys]
    assert len(got) == len(expected)
    for ours, theirs in zip(got, expected, strict=True):
        if theirs.ndim == ours.ndim:  # a per-step output: compare every step
            np.testing.assert_allclose(ours, theirs, **TOLERANCE)
        else:  # a whole-sequence output: it is the last step's value
            np.testing.assert_allclose(ours[:, -1], theirs, **TOLERANCE)
    assert state.batch_size == zoo.batch


@pytest.mark.parametrize("T", LENGTHS)
@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_file_steps_equal_keras(built: tuple[ZooModel, Any, Path], suffix: str, T: int) -> None:
    zoo, model, folder = built
    stream_model = rnnstream.load(folder / f"model{suffix}")
    assert_matches_keras(stream_model, zoo, model, T)


def test_live_model_equals_file(built: tuple[ZooModel, Any, Path]) -> None:
    zoo, model, folder = built
    live = rnnstream.from_keras(model)
    assert live.fingerprint == rnnstream.load(folder / "model.keras").fingerprint
    assert_matches_keras(live, zoo, model, 7)
