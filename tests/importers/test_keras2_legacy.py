"""The zoo again, written by tf.keras 2 (the ``tf-keras`` package) as legacy .h5 files: Keras 2's
config layout, ``hard_sigmoid`` of Keras 2, and its AND rule for merged masks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import rnnstream
from tests.importers.test_keras_conformance import LENGTHS, assert_matches_keras
from tests.zoo import ZOO, ZooModel, randomize

tf_keras = pytest.importorskip("tf_keras")

KERAS2_ZOO = [z for z in ZOO if not z.keras3_only]


@pytest.fixture(scope="module", params=KERAS2_ZOO, ids=lambda z: z.name)
def built(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[ZooModel, Any, Path]:
    zoo: ZooModel = request.param
    tf_keras.utils.set_random_seed(7)
    model = zoo.build(tf_keras)
    randomize(model, seed=len(zoo.name))
    path = tmp_path_factory.mktemp(zoo.name) / "model.h5"
    model.save(path)
    return zoo, model, path


@pytest.mark.parametrize("T", LENGTHS)
def test_tf_keras2_h5_steps_equal_keras(built: tuple[ZooModel, Any, Path], T: int) -> None:
    zoo, model, path = built
    stream_model = rnnstream.load(path)
    assert "Keras 2" in stream_model.source
    assert_matches_keras(stream_model, zoo, model, T)


def test_live_tf_keras2_model(built: tuple[ZooModel, Any, Path]) -> None:
    zoo, model, _ = built
    assert_matches_keras(rnnstream.from_keras(model), zoo, model, 7)
