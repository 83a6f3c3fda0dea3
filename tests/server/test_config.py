"""The server's engine threads: what is asked for, else RNNSTREAM_THREADS, else every core but one."""

from __future__ import annotations

import os

import pytest

from rnnstream.server.config import load_models, server_threads


def test_the_event_loop_keeps_a_core_unless_told_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RNNSTREAM_THREADS", raising=False)
    cores = len(os.sched_getaffinity(0))
    assert server_threads() == max(1, cores - 1)
    assert server_threads(3) == 3
    monkeypatch.setenv("RNNSTREAM_THREADS", "2")
    assert server_threads() is None  # the backend reads the variable itself


def test_loaded_models_step_with_the_threads_given() -> None:
    (model,) = load_models(["seed"], threads=1).values()
    assert model.backend.threads == 1
