"""The ``make run`` demonstration: stream the seed model step by step.

It shows (a) that each step's output equals a full-context recomputation, and (b) that a step costs
the same at any context length, while recomputing the whole context grows linearly with it.
"""

from __future__ import annotations

import time

import numpy as np

from rnnstream.bench.timing import format_seconds, median_seconds, stepper
from rnnstream.demo import SEED_MODEL
from rnnstream.importers import load

CHECKPOINTS = (10, 100, 1_000, 3_000)


def main(batch: int = 10, seed: int = 0) -> int:
    started = time.perf_counter()
    model = load(SEED_MODEL)
    print(model.summary())
    print()
    print(f"Streaming {batch} streams of 4 features through the seed model, one step at a time.")
    print("At each checkpoint: the step's cost, the cost of recomputing the whole context instead,")
    print("and the largest difference between the two outputs.\n")
    xs = np.random.default_rng(seed).normal(0, 1, (batch, max(CHECKPOINTS), 4)).astype(np.float32)
    header = f"{'context':>8}  {'one step':>10}  {'recompute context':>17}  {'max |difference|':>16}"
    print(header)
    print("-" * len(header))
    state, t = model.initial_state(batch), 0
    for checkpoint in CHECKPOINTS:
        while t < checkpoint - 1:  # stream up to the step before the checkpoint
            _, state = model.step(xs[:, t], state)
            t += 1
        before = state
        y, state = model.step(xs[:, t], before)
        t += 1
        step_time = median_seconds(stepper(model, xs[:, t - 1], before), repeats=200)
        recompute_start = time.perf_counter()
        ys_full, _ = model.run(xs[:, :checkpoint], model.initial_state(batch))
        recompute_time = time.perf_counter() - recompute_start
        difference = float(np.max(np.abs(ys_full[:, -1] - y)))  # type: ignore[call-overload]
        print(f"{checkpoint:>8,}  {format_seconds(step_time):>10}  {format_seconds(recompute_time):>17}  "
              f"{difference:>16.2e}")
    print("\nThe step stays flat as the context grows; recomputation grows linearly with it.")
    print(f"Done in {time.perf_counter() - started:.1f} s. Next: `make test`, then see README.md.")
    return 0
