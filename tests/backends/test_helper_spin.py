"""How long the kernel's idle helper threads poll before they sleep (fused.helper_spin, RNNSTREAM_SPIN_US)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest

import rnnstream
from rnnstream.backends import fused
from rnnstream.errors import InputError

pytestmark = pytest.mark.skipif(not fused.available(), reason="the compiled kernel is not built")


@pytest.fixture(autouse=True)
def spin_restored(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    monkeypatch.delenv("RNNSTREAM_SPIN_US", raising=False)
    before = fused.helper_spin()
    yield before
    fused.helper_spin(before)


def test_the_default_is_150_microseconds_and_can_be_set(spin_restored: int) -> None:
    assert spin_restored == 150
    assert fused.helper_spin(400) == 400 and fused.helper_spin() == 400
    assert fused.helper_spin(0) == 0 and fused.helper_spin(fused.SPIN_US_MAX) == 1_000_000


@pytest.mark.parametrize("microseconds", [-1, fused.SPIN_US_MAX + 1])
def test_a_spin_out_of_range_is_refused_and_changes_nothing(microseconds: int) -> None:
    fused.helper_spin(300)
    with pytest.raises(InputError, match=f"helper spin {microseconds} µs: give 0 to 1,000,000 µs"):
        fused.helper_spin(microseconds)
    assert fused.helper_spin() == 300


def test_the_environment_sets_it_when_a_fused_backend_is_made(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RNNSTREAM_SPIN_US", "250")
    rnnstream.load(rnnstream.demo.SEED_MODEL, backend="fused")
    assert fused.helper_spin() == 250


@pytest.mark.parametrize("value", ["fast", "1.5", "-5", "2000000"])
def test_a_bad_environment_value_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("RNNSTREAM_SPIN_US", value)
    with pytest.raises(InputError, match=f"RNNSTREAM_SPIN_US='{value}': give whole microseconds, 0 to 1,000,000"):
        rnnstream.load(rnnstream.demo.SEED_MODEL, backend="fused")


@pytest.mark.parametrize("microseconds", [0, 20, 5000])
@pytest.mark.parametrize("batch", [1, 64])
def test_steps_with_pauses_agree_with_one_thread_whatever_the_spin(microseconds: int, batch: int) -> None:
    """Helpers that sleep at once, fall asleep between steps, or poll through every pause: the same bits."""
    fused.helper_spin(microseconds)
    alone = rnnstream.load(rnnstream.demo.SEED_MODEL, backend="fused", threads=1)
    shared = rnnstream.load(rnnstream.demo.SEED_MODEL, backend="fused", threads=2)
    xs = np.random.default_rng(batch).normal(0, 1, (30, batch, 4)).astype(np.float32)
    state_alone, state_shared = alone.initial_state(batch), shared.initial_state(batch)
    for t, x in enumerate(xs):
        if t % 3 == 0:
            time.sleep(0.0002 * (t % 4))  # gaps of 0 to 0.6 ms: before, within and past the spin
        y_alone, state_alone = alone.step(x, state_alone)
        y_shared, state_shared = shared.step(x, state_shared)
        np.testing.assert_array_equal(y_shared, y_alone)
    np.testing.assert_array_equal(state_shared.rows, state_alone.rows)
