"""Process-wide settings belong to the serving process, not to whoever builds an app."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from rnnstream.server.app import create_app
from rnnstream.server.config import ServerConfig
from rnnstream.server.process import GC_YOUNG_THRESHOLD, tune_gc


@pytest.fixture
def collector() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_building_an_app_leaves_the_collector_alone(collector: None) -> None:
    before = gc.get_threshold()
    create_app(ServerConfig(models=["builtin:identity"]))
    assert gc.get_threshold() == before


def test_a_serving_process_collects_its_youngest_objects_less_often(collector: None) -> None:
    tune_gc()
    assert gc.get_threshold()[0] == GC_YOUNG_THRESHOLD > 700
    assert gc.get_freeze_count() > 0
