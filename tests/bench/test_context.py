"""The context benchmark measures what it says (its figures are reported, never asserted)."""

from __future__ import annotations

import rnnstream
from rnnstream.bench.context import ContextTiming, report, time_per_step_by_context


def test_times_every_requested_length() -> None:
    model = rnnstream.load(rnnstream.demo.SEED_MODEL)
    timings = time_per_step_by_context(model, batch=2, lengths=(3, 1, 8), repeats=10)
    assert [t.context for t in timings] == [1, 3, 8]
    assert all(t.seconds_per_step > 0 for t in timings)


def test_report_shows_the_spread() -> None:
    text = report([ContextTiming(10, 2e-4), ContextTiming(10_000, 2.2e-4)])
    assert "10,000" in text and "200.0 µs" in text and "slowest / fastest = 1.100" in text
