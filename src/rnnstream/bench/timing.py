"""Small timing helpers shared by the benchmarks and the demo."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rnnstream.model import Inputs, StreamModel
    from rnnstream.state import State


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 3) -> float:
    """The median wall time of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def format_seconds(seconds: float) -> str:
    """``1.5e-05`` → ``'15.0 µs'``; picks µs, ms or s.

    >>> format_seconds(1.5e-05), format_seconds(0.0123), format_seconds(2.0)
    ('15.0 µs', '12.3 ms', '2.00 s')
    """
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def stepper(model: StreamModel, x: Inputs, state: State) -> Callable[[], object]:
    """One step of ``model`` from ``state`` as a call to time (the state is not advanced)."""
    return lambda: model.step(x, state)
