"""bench engine's rounds: calibrated on a stretch of steps, not on the first two, and a neighbour's call counted."""

from __future__ import annotations

import time

import numpy as np

from rnnstream.bench import engine_worker


def test_a_round_is_calibrated_on_steps_after_the_first_slow_ones() -> None:
    """The first call after a pause is slow (cold caches, sleeping helper threads): counted alone with the next,
    it would make a round of ~16 of these 1 ms steps instead of ~100-250."""
    durations = iter([0.03])

    def step(_: object) -> None:
        time.sleep(next(durations, 0.001))

    calls = engine_worker.round_calls(step, np.zeros(1))
    assert 60 <= calls <= 260


def test_a_slow_step_is_still_called_twice_to_calibrate() -> None:
    seen: list[int] = []
    calls = engine_worker.round_calls(lambda _: (seen.append(1), time.sleep(0.06)), np.zeros(1))
    assert len(seen) == 2 and 1 <= calls <= 5


def test_an_engine_beside_a_neighbour_calls_the_neighbour_first() -> None:
    order: list[str] = []
    both = engine_worker._after(lambda _: order.append("neighbour"), lambda _: order.append("step") or 7)
    assert both(np.zeros(1)) == 7 and order == ["neighbour", "step"]
