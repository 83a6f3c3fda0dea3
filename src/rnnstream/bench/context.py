"""Time per step against context length: with explicit state it must stay flat.

A stream is advanced to context length t (10, 1,000, 10,000 steps of history), then single steps are
timed there. Run: ``rnnstream bench context [MODEL] [--batch 10]``.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import numpy as np

from rnnstream.bench.timing import format_seconds, median_seconds, stepper
from rnnstream.model import StreamModel
from rnnstream.types import Array

DEFAULT_LENGTHS = (10, 1_000, 10_000)
STEPS_PER_ROUND = 10


@dataclass(frozen=True)
class ContextTiming:
    context: int
    seconds_per_step: float


def random_inputs(model: StreamModel, batch: int, steps: int, seed: int = 0) -> list[Array]:
    """Random inputs ``[B, T, ...]`` for every model input (token ids below 2 for token inputs)."""
    rng = np.random.default_rng(seed)
    arrays: list[Array] = []
    for spec in model.inputs:
        if spec.spec.dtype == "int64":
            arrays.append(rng.integers(0, 2, (batch, steps)))
        else:
            arrays.append(rng.normal(0, 1, (batch, steps, *spec.spec.shape)).astype(np.float32))
    return arrays


def time_per_step_by_context(
    model: StreamModel, batch: int = 10, lengths: tuple[int, ...] = DEFAULT_LENGTHS, repeats: int = 200
) -> list[ContextTiming]:
    """Median time of one step at each context length, for ``batch`` streams.

    The streams are first advanced to every length; the timing rounds then visit the lengths in
    turn, so drift of a shared machine's speed falls on all of them alike.
    """
    history = random_inputs(model, batch, max(lengths), seed=0)
    probe = [a[:, 0] for a in random_inputs(model, batch, 1, seed=1)]
    x = probe[0] if len(probe) == 1 else probe
    state, reached, states = model.initial_state(batch), 0, {}
    for length in sorted(lengths):
        chunk = [a[:, reached:length] for a in history]
        _, state = model.run(chunk[0] if len(chunk) == 1 else chunk, state)
        reached, states[length] = length, state
    rounds = max(1, repeats // STEPS_PER_ROUND)
    samples: dict[int, list[float]] = {length: [] for length in states}
    for _ in range(rounds):
        for length, at_length in states.items():
            samples[length].append(median_seconds(stepper(model, x, at_length), STEPS_PER_ROUND, warmup=2))
    return [ContextTiming(length, statistics.median(samples[length])) for length in sorted(states)]


def report(timings: list[ContextTiming]) -> str:
    """A table of the timings and the spread between the slowest and the fastest."""
    lines = ["context length   time per step"]
    lines += [f"{t.context:>14,}   {format_seconds(t.seconds_per_step):>13}" for t in timings]
    fastest = min(t.seconds_per_step for t in timings)
    slowest = max(t.seconds_per_step for t in timings)
    lines.append(f"slowest / fastest = {slowest / fastest:.3f} (flat means close to 1.0)")
    return "\n".join(lines)
