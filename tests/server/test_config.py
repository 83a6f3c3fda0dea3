"""The server's engine threads: what is asked for, else RNNSTREAM_THREADS, else every core for a heavy
model and every core but one (the event loop's) for a light one."""

from __future__ import annotations

import os

import pytest

import rnnstream
from rnnstream.demo import builtin
from rnnstream.server.config import HEAVY_STEP, load_models, server_threads


def test_a_light_model_leaves_the_event_loop_a_core_and_a_heavy_one_takes_every_core(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("RNNSTREAM_THREADS", raising=False)
    seed, large = rnnstream.load(rnnstream.demo.SEED_MODEL), builtin.build("large")
    assert seed.parameter_count < HEAVY_STEP <= large.parameter_count
    assert server_threads(seed) == max(1, len(os.sched_getaffinity(0)) - 1)
    assert server_threads(large) is None  # the backend's default: every core
    assert server_threads(seed, 3) == server_threads(large, 3) == 3
    monkeypatch.setenv("RNNSTREAM_THREADS", "2")
    assert server_threads(seed) is None  # the backend reads the variable itself


def test_loaded_models_step_with_the_threads_given() -> None:
    (model,) = load_models(["seed"], threads=1).values()
    assert model.backend.threads == 1


def test_loaded_models_step_at_the_precision_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RNNSTREAM_THREADS", "2")  # server_threads leaves the threads to the backend (None)
    models = load_models(["seed", "builtin:identity"], precision="bf16-widen")
    assert [model.precision for model in models.values()] == ["bf16-widen", "bf16-widen"]
    (model,) = load_models(["seed"], threads=1, precision="bf16-widen").values()
    assert (model.precision, model.backend.threads) == ("bf16-widen", 1)
    assert getattr(model.backend, "precision", "bf16-widen") == "bf16-widen"
