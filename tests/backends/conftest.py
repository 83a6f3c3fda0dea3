"""Fixtures of the backend suites: each zoo model built in Keras and saved once for every backend."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.backends.conformance import save_zoo_model
from tests.zoo import ZOO, ZooModel


@pytest.fixture(scope="session", params=ZOO, ids=lambda z: z.name)
def zoo_file(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[ZooModel, Path]:
    keras = pytest.importorskip("keras")
    zoo: ZooModel = request.param
    return zoo, save_zoo_model(keras, zoo, tmp_path_factory.mktemp(zoo.name))
