"""How long the kernel's idle helper threads poll before they sleep (fused.helper_spin, RNNSTREAM_SPIN_US)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import numpy as np
import pytest

import rnnstream
from rnnstream.backends import fused
from rnnstream.errors import InputError

pytestmark = pytest.mark.skipif(not fused.available(), reason="the compiled kernel is not built")


@pytest.fixture(autouse=True)
def spin_restored() -> Iterator[None]:
    before = fused.helper_spin()
    yield
    fused.helper_spin(before)


def test_it_can_be_set_and_read_back() -> None:
    assert fused.helper_spin(400) == 400 and fused.helper_spin() == 400
    assert fused.helper_spin(0) == 0 and fused.helper_spin(fused.SPIN_US_MAX) == 1_000_000


@pytest.mark.parametrize("microseconds", [-1, fused.SPIN_US_MAX + 1, 1.5, True])
def test_a_spin_that_is_not_whole_microseconds_in_range_is_refused(microseconds: int) -> None:
    fused.helper_spin(300)
    with pytest.raises(InputError, match=r"helper spin .* µs: give whole microseconds, 0 to 1,000,000"):
        fused.helper_spin(microseconds)
    assert fused.helper_spin() == 300


ENVIRONMENT_SCRIPT = """
import os, rnnstream
from rnnstream.backends import fused
from rnnstream.errors import InputError
print(fused.helper_spin())
for value in ("fast", "1.5", "-5", "2000000", "²"):
    os.environ["RNNSTREAM_SPIN_US"] = value
    try:
        rnnstream.load(rnnstream.demo.SEED_MODEL, backend="fused")
    except InputError as e:
        print(e)
os.environ["RNNSTREAM_SPIN_US"] = "250"
rnnstream.load(rnnstream.demo.SEED_MODEL, backend="fused")
print(fused.helper_spin())
fused.helper_spin(400)
rnnstream.load(rnnstream.demo.SEED_MODEL, backend="fused")
print(fused.helper_spin())
"""


def test_the_environment_is_read_when_the_first_fused_backend_is_made() -> None:
    """In a process of its own (the variable is read once per process): the default, a clear error for each bad
    value, the variable's value once a backend is made, and helper_spin's after it (the variable not read again)."""
    environment = {k: v for k, v in os.environ.items() if k != "RNNSTREAM_SPIN_US"}
    done = subprocess.run([sys.executable, "-c", ENVIRONMENT_SCRIPT], env=environment, capture_output=True, text=True,
                          check=True, timeout=120)  # fmt: skip
    lines = done.stdout.splitlines()
    assert lines[0] == str(fused.SPIN_US_DEFAULT) == "150"
    assert lines[1:6] == [f"RNNSTREAM_SPIN_US='{v}': give whole microseconds, 0 to 1,000,000"
                          for v in ("fast", "1.5", "-5", "2000000", "²")]  # fmt: skip
    assert lines[6:] == ["250", "400"]


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
