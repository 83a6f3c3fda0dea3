"""``rnnstream bench precision``: how far bf16 and int8 weights (each mode: rnnstream.precision) move a
model's outputs from fp32's, and whether the gap grows with time.

For each model, the fp32 and the bf16 model run free from a zero state over the same 10,000 steps of
generated input (batch 8; real inputs normal(0, 1), token inputs uniform over the vocabulary), each
feeding its own state back. The report gives the largest |Δ| of any output over the whole run and per
tenth of it: a gap that stays flat from the first tenth to the last is rounding noise, one that climbs
is drift.

>>> import rnnstream
>>> row = measure("seed", rnnstream.load(rnnstream.demo.SEED_MODEL, backend="numpy"), steps=40, windows=2)
>>> len(row.windows), row.largest == max(row.windows) < 1e-2
(2, True)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rnnstream.backends import fused
from rnnstream.model import StreamModel
from rnnstream.types import Array

BATCH = 8
STEPS = 10_000
WINDOWS = 10
CHUNK = 500  # steps per run() call: the outputs of a chunk at a time in memory


@dataclass
class Drift:
    model: str
    precision: str  # the mode against fp32: bf16-widen, bf16-dot or int8 (rnnstream.precision)
    largest: float  # max |Δ| of any output over the run
    windows: list[float]  # max |Δ| in each consecutive tenth (or ``windows``-th) of the run

    @property
    def trend(self) -> float:
        """The last window's largest |Δ| over the first's: about 1 when the gap does not grow."""
        return self.windows[-1] / self.windows[0] if self.windows[0] > 0 else float("inf")


def _inputs(model: StreamModel, rng: np.random.Generator, T: int) -> list[Array]:
    ranges = model.token_ranges
    xs: list[Array] = []
    for spec in model.inputs:
        if spec.name in ranges:
            xs.append(rng.integers(0, ranges[spec.name], (BATCH, T)))
        else:
            xs.append(rng.normal(0, 1, (BATCH, T, *spec.spec.shape)).astype(np.float32))
    return xs


def measure(
    name: str, model: StreamModel, *, steps: int = STEPS, windows: int = WINDOWS, precision: str = "bf16-widen"
) -> Drift:
    """``model`` at fp32 against its twin at ``precision`` (same graph, same backend kind) over ``steps`` steps."""
    fp32 = StreamModel(model.graph, backend=model.backend.name, precision="fp32")
    bf16 = StreamModel(model.graph, backend=model.backend.name, precision=precision)
    rng = np.random.default_rng(0)
    s32, s16 = fp32.initial_state(BATCH), bf16.initial_state(BATCH)
    per_step: list[float] = []
    for start in range(0, steps, CHUNK):
        xs = _inputs(model, rng, min(CHUNK, steps - start))
        x = xs[0] if len(xs) == 1 else xs
        y32, s32 = fp32.run(x, s32)
        y16, s16 = bf16.run(x, s16)
        gaps = [np.abs(a - b).reshape(BATCH, a.shape[1], -1).max(axis=(0, 2)) for a, b in _pairs(y32, y16)]
        per_step.extend(np.max(gaps, axis=0).tolist())
    size = steps // windows
    return Drift(name, precision, max(per_step), [max(per_step[i * size : (i + 1) * size]) for i in range(windows)])


def _pairs(a: object, b: object) -> list[tuple[Array, Array]]:
    first = a if isinstance(a, list) else [a]
    second = b if isinstance(b, list) else [b]
    return list(zip(first, second, strict=True))


def report(rows: list[Drift]) -> str:
    """One line per model and mode: the largest |Δ|, the first and last tenth's, and their ratio."""
    columns = f"{'max |Δ|':>10} {'first tenth':>12} {'last tenth':>12} {'last/first':>10}"
    lines = [f"{'model':<28} {'precision':<10} {columns}"]
    for row in rows:
        lines.append(
            f"{row.model:<28} {row.precision:<10} {row.largest:>10.2e} {row.windows[0]:>12.2e} "
            f"{row.windows[-1]:>12.2e} {row.trend:>10.2f}"
        )
    return "\n".join(lines)


BUNDLED = ("seed", "text", "co2")


def run(models: tuple[str, ...] = BUNDLED, steps: int = STEPS) -> str:
    """The report for ``models``: bundled names (``seed``, ``text``, ``co2``) or model files, in each mode
    their backend computes here (bf16-dot: the fused kernel on a CPU with AVX512_BF16), and at int8 (the
    fused kernel with AVX512_VNNI or AVX2, else the NumPy backend's emulation: the same numbers, slower)."""
    from rnnstream import demo
    from rnnstream.importers import load

    paths = {"seed": demo.SEED_MODEL, "text": demo.TEXT_MODEL, "co2": demo.CO2_MODEL}
    rows = []
    for name in models:
        model = load(paths.get(name, name))
        on_kernel = model.backend.name == "fused"
        for precision in ("bf16-widen", "bf16-dot") if on_kernel and fused.bf16_dot() else ("bf16-widen",):
            rows.append(measure(name, model, steps=steps, precision=precision))
        int8_model = model if on_kernel and fused.int8() else StreamModel(model.graph, backend="numpy")
        rows.append(measure(name, int8_model, steps=steps, precision="int8"))
    return report(rows)
