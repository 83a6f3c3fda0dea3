"""The rows ``rnnstream bench engine`` measures (:mod:`rnnstream.bench.engine`): each engine's time per step
at one batch size, in every round and their median; how far its outputs were from the reference's, and the bound
they had to keep at its precision; the arithmetic limit. Then the report, the JSON and the chart made from them.

Ratios between engines (and to the limit) are taken round by round: the engines are timed in turn, moments
apart, so a drift of the shared machine's speed between rounds falls on both figures of a ratio alike.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rnnstream.bench.timing import format_seconds
from rnnstream.errors import MissingDependencyError

AGREEMENT_STEPS = 5
FP32_BOUND = 1e-5
"""How far an fp32 engine's outputs may be from the reference's: the order of float32 sums taken differently."""
ROUNDING = {"bf16": 2 * 2.0**-9, "int8": 2 / 254}
"""The relative rounding of one product's two operands at a lower precision: bf16, 2^-9 of a weight and (bf16-dot)
of a row entry; int8, half a step (1/254) of the largest weight of its column and of the largest entry of its row."""
ROUNDINGS_ALLOWED = 6
"""A lower-precision engine may differ from the reference by this many ``ROUNDING`` times the largest |output| of
the reference over the agreement steps (int8: 4.7%, bf16: 2.3%). Measured at batches 1-4096, int8 (rnnstream's and
ONNX Runtime's alike) stays 10x and more below it (seed: ≤ 5e-4, outputs up to 0.47; large: ≤ 1.7e-3, up to 0.3),
bf16 20x and more; a broken engine (wrong weights, scales or state) misses by the outputs' own size, and fails."""


@dataclass
class Row:
    model: str
    batch: int
    seconds: dict[str, float] = field(default_factory=dict)  # engine → median seconds per step
    max_difference: dict[str, float] = field(default_factory=dict)  # engine → vs rnnstream
    limit: float = 0.0  # the arithmetic limit's seconds per step, the median over rounds (bench/limit.py)
    bound: dict[str, float] = field(default_factory=dict)  # engine → the largest max_difference it may have
    rounds: dict[str, list[float]] = field(default_factory=dict)  # engine → mean seconds per step in each round
    limit_rounds: list[float] = field(default_factory=list)  # the arithmetic limit in each round
    own_rounds: dict[str, list[float]] = field(default_factory=dict)  # beside engine → own steps, same process
    limit_blas: str = ""  # the BLAS whose product set the limit, its kernel and threads (bench/limit.py: blas)

    def ratio(self, engine: str, reference: str) -> float:
        """``engine``'s time ÷ ``reference``'s: the median over rounds of the two times in the same round
        (moments apart, so the machine's drift falls on both), else the medians' ratio.

        >>> Row("seed", 1, {"a": 2.0, "b": 1.0}, rounds={"a": [2.0, 3.0, 9.0], "b": [1.0, 2.0, 3.0]}).ratio("a", "b")
        2.0
        """
        return paired_ratio(self.rounds.get(engine, []), self.rounds.get(reference, [])) or (
            self.seconds[engine] / self.seconds[reference]
        )

    def beside_ratio(self, engine: str) -> float:
        """An engine beside a neighbour: its time ÷ its own steps' without the neighbour, timed in the same process
        just before, round by round (0.0 where it has none): what the neighbour costs, and nothing else.

        >>> Row("seed", 1, rounds={"b": [3.0, 4.0, 9.0]}, own_rounds={"b": [2.0, 2.0, 3.0]}).beside_ratio("b")
        2.0
        """
        return paired_ratio(self.rounds.get(engine, []), self.own_rounds.get(engine, []))

    def limit_ratio(self, engine: str) -> float:
        """The arithmetic limit ÷ ``engine``'s time (1 at the limit), paired round by round as in :meth:`ratio`."""
        return paired_ratio(self.limit_rounds, self.rounds.get(engine, [])) or self.limit / self.seconds[engine]


def paired_ratio(numerators: list[float], denominators: list[float]) -> float:
    """The median of the ratios of figures taken in the same round; 0.0 where the two lists do not pair up."""
    if not numerators or len(numerators) != len(denominators):
        return 0.0
    return statistics.median(a / b for a, b in zip(numerators, denominators, strict=True))


def precision_of(engine: str) -> str:
    """The precision of an engine's weights, by its name: ``int8``, ``bf16`` (either mode) or ``fp32``."""
    return "int8" if engine.endswith("-int8") else "bf16" if "bf16" in engine else "fp32"


def agreement_bound(engine: str, scale: float) -> float:
    """How far ``engine``'s outputs may be from the reference's (fp32), ``scale`` the largest |output| of the
    reference: :data:`FP32_BOUND` at fp32; ``ROUNDINGS_ALLOWED`` roundings of the scale at a lower precision."""
    return max(FP32_BOUND, ROUNDINGS_ALLOWED * ROUNDING.get(precision_of(engine), 0.0) * scale)


def disagreeing(row: Row) -> list[str]:
    """The engines of ``row`` whose outputs are further from the reference's than their bound (NaN included)."""
    return [e for e, d in row.max_difference.items() if not d <= row.bound[e]]


def report(rows: list[Row]) -> str:
    """A table per model: time per step for each engine, and each engine's time ÷ rnnstream's (beside a neighbour,
    ÷ its own steps; — where an engine was not timed at that batch); then the largest output differences, lower
    precisions apart with their bound."""
    lines = []
    for label in dict.fromkeys(r.model for r in rows):
        mine = [r for r in rows if r.model == label]
        engines = list(dict.fromkeys(e for r in mine for e in r.seconds))
        if not engines:
            continue
        ours = engines[0]
        lines.append(f"\n{label}: time per step (× = engine's time ÷ {ours}'s; higher means rnnstream is faster;"
                     " beside a neighbour: ÷ its own steps without it, in the same process)")  # fmt: skip
        lines.append(f"{'batch':>6}  " + "  ".join(f"{e:>22}" for e in [*engines, "arithmetic limit"]))
        for r in mine:
            cells = [_cell(r, e, ours) for e in engines]
            if r.limit:
                cells.append(f"{format_seconds(r.limit):>10} ({r.limit_ratio(ours):8.2f}×)")
            lines.append(f"{r.batch:>6}  " + "  ".join(f"{c:>22}" for c in cells))
        if mine[0].limit_blas:
            lines.append(f"arithmetic limit: the step's FLOPs at the float32 product rate of {mine[0].limit_blas}")
        lines += _agreement_lines(mine)
    return "\n".join(lines)


def _cell(row: Row, engine: str, ours: str) -> str:
    """An engine's time and its ratio: to ``ours``, or beside a neighbour to its own (:meth:`Row.beside_ratio`)."""
    if engine not in row.seconds:
        return "—"
    ratio = (engine in row.own_rounds and row.beside_ratio(engine)) or row.ratio(engine, ours)
    return f"{format_seconds(row.seconds[engine]):>10}" + (f" ({ratio:8.2f}×)" if engine != ours else " " * 12)


def _agreement_lines(rows: list[Row]) -> list[str]:
    """The largest output difference at fp32; at bf16 and int8, the one nearest its bound, and that bound."""
    fp32 = [d for r in rows for e, d in r.max_difference.items() if precision_of(e) == "fp32"]
    lines = [f"largest output difference from rnnstream over {AGREEMENT_STEPS} steps: {max(fp32, default=0.0):.2e}"]
    for precision, how in (("bf16", "rounded"), ("int8", "quantized")):
        lower = [(d, r.bound[e]) for r in rows for e, d in r.max_difference.items() if precision_of(e) == precision]
        if lower:
            difference, bound = max(lower, key=lambda pair: pair[0] / pair[1])
            lines.append(f"  of which {precision} weights ({how}, so not within {FP32_BOUND:.0e}): {difference:.2e}"
                         f" (bound {bound:.2e})")  # fmt: skip
    return lines


def save_json(rows: list[Row], path: Path, meta: dict[str, Any]) -> None:
    path.write_text(json.dumps({"meta": meta, "rows": [asdict(r) for r in rows]}, indent=2))


def save_chart(rows: list[Row], path: Path) -> None:
    """Time per step against batch size, one panel per model, log-log."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise MissingDependencyError("the chart needs matplotlib: pip install matplotlib") from e
    labels = list(dict.fromkeys(r.model for r in rows))
    fig, axes = plt.subplots(1, len(labels), figsize=(6 * len(labels), 4.5), squeeze=False)
    for ax, label in zip(axes[0], labels, strict=True):
        mine = [r for r in rows if r.model == label]
        for engine in dict.fromkeys(e for r in mine for e in r.seconds):
            timed = [r for r in mine if engine in r.seconds]
            ax.plot([r.batch for r in timed], [r.seconds[engine] * 1e6 for r in timed], marker="o", label=engine)
        ax.set(xscale="log", yscale="log", xlabel="batch (streams per step)", ylabel="µs per step", title=label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
