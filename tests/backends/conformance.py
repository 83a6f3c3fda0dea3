"""What every backend's tests share: the zoo models saved once per session, and the step-by-step check
against the NumPy oracle."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import rnnstream
from rnnstream.state import State
from tests.zoo import ZooModel, randomize

TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}

Inputs = Any
Step = Callable[[Inputs, State], tuple[Any, State]]


def listed(ys: Any) -> list[np.ndarray]:
    return ys if isinstance(ys, list) else [ys]


def steps(inputs: Inputs) -> list[Inputs]:
    """One model input per time step, in the form the model takes (array, list or dict)."""
    if isinstance(inputs, dict):
        T = next(iter(inputs.values())).shape[1]
        return [{k: v[:, t] for k, v in inputs.items()} for t in range(T)]
    if isinstance(inputs, list):
        return [[a[:, t] for a in inputs] for t in range(inputs[0].shape[1])]
    return [inputs[:, t] for t in range(inputs.shape[1])]


def assert_agrees_step_by_step(
    model: rnnstream.StreamModel, inputs: Inputs, batch: int, step: Step, *, precision: str = "fp32"
) -> None:
    """From the oracle's own state at every step, ``step``'s outputs and state rows equal the oracle's
    (each step starts from the same state, so 1e-7 roundings cannot grow through a chaotic recurrence).
    ``precision``: the oracle's (bf16: the same weights rounded to bfloat16, so the same tolerance;
    bf16-dot and int8: see assert_close)."""
    oracle = rnnstream.StreamModel(model.graph, backend="numpy", precision=precision)
    state = oracle.initial_state(batch)
    beyond = total = 0
    for x in steps(inputs):
        y_ours, s_ours = step(x, state)
        y_oracle, state = oracle.step(x, state)
        for ours, theirs in zip(listed(y_ours), listed(y_oracle), strict=True):
            assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
            beyond += assert_close(ours, theirs, precision)
            total += ours.size
        beyond += assert_close(s_ours.rows, state.rows, precision)
        total += state.rows.size
    assert beyond <= DOT_FLIPS * total, f"{beyond} of {total} values beyond {TOLERANCE}"


DOT_FLIPS = 0.01
"""bf16-dot and int8: the largest share of values beyond TOLERANCE over a run (see assert_close)."""

FLIP_SIZE = {"bf16-dot": 2.0**-8, "int8": 2.0**-5}
"""How far apart (of the output scale) one row value rounded apart may move an output: a bfloat16 step is 2^-8
of the value; an 8-bit step is 1/127 of the row's largest value, so the product moves by at most
``max |row| · max |w| / 127`` (under 2^-5 of the output scale for the zoo's weights and rows in [-3, 3]).
Seen: the seed model at int8, batch 300, 20 steps, 863 of 3.6M values apart, by at most 7.3e-5."""


def assert_close(ours: np.ndarray, theirs: np.ndarray, precision: str) -> int:
    """Within TOLERANCE, or at ``bf16-dot`` within 2^-8 of the output scale: how many values are beyond
    TOLERANCE (0 but at bf16-dot, where assert_agrees_step_by_step allows a few: DOT_FLIPS). Why: a
    layer's input row is rounded to bfloat16 by both, but one computed by a layer before it (a stacked
    layer's h) differs by float32 roundings (its sums' order), and where it lies at a midpoint between
    two bfloat16 values the two round it apart, by 2^-8 of its size: that product moves by
    ``|w|·|a|·2^-8``, and every output that depends on it. Rare (a float32 rounding is ~2^-24 of a value,
    a bfloat16 step 2^-8), but not never: seen in 1 of the zoo's 40 runs, 2 of 74 values ~1e-3 apart.
    At ``int8`` the same happens where a row value lies at a midpoint between two 8-bit steps
    (FLIP_SIZE)."""
    if precision not in FLIP_SIZE:
        np.testing.assert_allclose(ours, theirs, **TOLERANCE)
        return 0
    scale = max(1.0, float(np.max(np.abs(theirs), initial=0.0)))
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=scale * FLIP_SIZE[precision])
    return int(np.sum(~np.isclose(ours, theirs, **TOLERANCE)))


def save_zoo_model(keras: Any, zoo: ZooModel, folder: Path) -> Path:
    """Build ``zoo`` in real Keras with random non-trivial weights and save it as ``.keras``."""
    keras.utils.set_random_seed(3)
    model = zoo.build(keras)
    randomize(model, seed=len(zoo.name))
    path = folder / "model.keras"
    model.save(path)
    return path


def in_forked_child(work: Callable[[], bytes]) -> bytes:
    """Run ``work`` in a forked child process and return the bytes it returned there."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.write(write, work())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as result:
        produced = result.read()
    os.waitpid(pid, 0)
    return produced
