"""bench engine's rounds: calibrated on a stretch of steps after an untimed first one, a neighbour's call counted."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from rnnstream.bench import engine_worker


class Clock:
    """A stand-in for time.perf_counter that only the fake steps move."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[Clock]:
    fake = Clock()
    monkeypatch.setattr(engine_worker.time, "perf_counter", fake)
    yield fake


def steps_taking(clock: Clock, seconds: Iterator[float], seen: list[float]) -> engine_worker.peers.StepFn:
    def step(_: object) -> None:
        took = next(seconds)
        seen.append(took)
        clock.now += took

    return step


def test_the_slow_first_step_after_a_pause_is_left_out(clock: Clock) -> None:
    """Counted with the next, a first step of 30 ms would make a round of ~16 steps of 1 ms instead of 250."""
    seen: list[float] = []
    step = steps_taking(clock, iter([0.03] + [0.001] * 1000), seen)
    assert engine_worker.round_calls(step, np.zeros(1)) == 250
    assert len(seen) == 1 + 50  # the untimed one, then CALIBRATION_SECONDS of 1 ms steps


def test_a_slow_step_is_still_timed_twice(clock: Clock) -> None:
    seen: list[float] = []
    step = steps_taking(clock, iter([0.06] * 10), seen)
    assert engine_worker.round_calls(step, np.zeros(1)) == 4  # 0.25 s of 60 ms steps
    assert len(seen) == 3


def test_an_engine_beside_a_neighbour_calls_the_neighbour_first() -> None:
    order: list[str] = []
    both = engine_worker._after(lambda _: order.append("neighbour"), lambda _: order.append("step") or 7)
    assert both(np.zeros(1)) == 7 and order == ["neighbour", "step"]
