"""``rnnstream bench engine``: time per step against ONNX Runtime, PyTorch and Keras, same weights.

For each model (the seed model, LSTM(100) → LSTM(200) → Dense(1); and the large one, 2 × LSTM(512)
over 128 features) and each batch size, every engine steps from a zero state. Timing rounds visit
the engines in turn (a shared machine's drift falls on all alike); the figure is the median over
rounds of the mean time per step in a round. Before timing, every engine's outputs over a few steps
are checked against rnnstream's: within 1e-5 at fp32, within a bound that follows from the rounding at bf16
and int8 (:func:`agreement_bound`); an engine that misses is not timed, and a note says so. The engines, and
the process each runs in: :mod:`rnnstream.bench.engine_worker`.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import platform
import signal
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from rnnstream.bench import limit, peers
from rnnstream.bench.engine_worker import DEVICE_ENGINE, ENGINES, KERAS_ENGINES, load_model, worker
from rnnstream.bench.timing import format_seconds
from rnnstream.errors import MissingDependencyError

DEFAULT_BATCHES = (1, 10, 256, 1024, 4096)
AGREEMENT_STEPS = 5
SETTLE_SECONDS = 0.1
"""Pause after each engine's round: thread pools that spin-wait when idle (ONNX Runtime's, OpenMP's)
go to sleep before the next engine is timed."""
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
    limit: float = 0.0  # the arithmetic limit's seconds per step (bench/limit.py)
    bound: dict[str, float] = field(default_factory=dict)  # engine → the largest max_difference it may have

    def ratio(self, engine: str, reference: str) -> float:
        return self.seconds[engine] / self.seconds[reference]


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


@contextmanager
def _paused(processes: Iterator[Any]) -> Iterator[None]:
    """Stop the other engines' processes while one engine is timed (POSIX; elsewhere a no-op).

    They are idle, but not absent: on a 2-core machine, the mere presence of the PyTorch engine's idle
    process made the median of rnnstream's two-thread steps up to 9× slower (seed model, batch 256),
    while ONNX Runtime's steps were unaffected; that was the kernel's OpenMP barrier (work_pool.h), gone
    since, but every engine is timed alone alike.
    """
    stopped = [p.pid for p in processes] if hasattr(signal, "SIGSTOP") else []
    for pid in stopped:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)


_Workers = dict[str, tuple[Connection, Any]]
"""Engine name → the pipe to its worker process, and the process."""


def measure(
    model_name: str, batches: tuple[int, ...], engines: tuple[str, ...], threads: int, rounds: int, backend: str,
    progress: Callable[[str], None] = lambda _: None, device: str | None = None,
) -> tuple[list[Row], list[str]]:  # fmt: skip
    """Rows for ``model_name`` at each batch size, and a note for each engine that could not run or whose
    outputs missed their bound (:func:`agreement_bound`; from that batch on, it is not timed).

    ``device`` is the torch device of backend ``torch`` and of the ``rnnstream-device`` engine."""
    workers, missing = _start_workers(model_name, engines, threads, backend, progress, device)
    rng = np.random.default_rng(0)
    plain = load_model(model_name, "numpy", 1)
    features = plain.inputs[0].spec.shape
    progress(f"{model_name}: the arithmetic limit")
    seconds_per_flop = 1 / limit.gemm_rate(threads)
    rows = []
    try:
        for batch in batches:
            xs = [rng.normal(0, 1, (batch, *features)).astype(np.float32) for _ in range(AGREEMENT_STEPS)]
            row, dropped = _measure_batch(model_name, batch, xs, workers, rounds, progress)
            rows.append(row)
            missing += dropped
            rows[-1].limit = batch * limit.step_flops(plain) * seconds_per_flop
    finally:
        _stop_workers(workers)
    return rows, missing


def _start_workers(
    model_name: str, engines: tuple[str, ...], threads: int, backend: str, progress: Callable[[str], None],
    device: str | None,
) -> tuple[_Workers, list[str]]:  # fmt: skip
    """A process per engine, ready to step; the engines that could not start, each with why."""
    context = multiprocessing.get_context("spawn")
    workers: _Workers = {}
    missing: list[str] = []
    for engine in engines:
        progress(f"{model_name}: starting {engine}")
        parent, child = context.Pipe()
        process = context.Process(target=worker, args=(child, engine, model_name, backend, threads, device),
                                  daemon=True)  # fmt: skip
        with peers.environment(peers.QUIET_ENVIRONMENT if engine.endswith("-quiet") else {}):
            process.start()  # the child reads its environment as it starts
        child.close()  # the child's end lives in the child only: if it dies, recv() raises EOFError, never hangs
        try:
            status, detail = parent.recv()
        except EOFError:
            process.join()
            status, detail = "missing", f"{engine}: its process ended before it was ready (exit {process.exitcode})"
        if status == "ready":
            workers[detail] = (parent, process)
        else:
            missing.append(detail)
            process.join()
    return workers, missing


def _stop_workers(workers: _Workers) -> None:
    for connection, process in workers.values():
        connection.send(("stop", None))
        process.join(timeout=10)


def _measure_batch(
    model_name: str, batch: int, xs: list[np.ndarray[Any, Any]], workers: _Workers, rounds: int,
    progress: Callable[[str], None],
) -> tuple[Row, list[str]]:  # fmt: skip
    """Every engine at one batch size: checked against the first over ``xs``, then timed on ``xs[0]``; a note
    for each engine that missed its bound, stopped instead."""
    row = Row(model_name, batch)
    label = f"{model_name} batch {batch}"
    row.max_difference, row.bound = _differences(label, batch, xs, workers, progress)
    notes = _drop_disagreeing(row, workers)
    calls = _calibrate(xs[0], workers)
    row.seconds = _median_seconds(label, xs[0], calls, workers, rounds, progress)
    return row, notes


def _differences(
    label: str, batch: int, xs: list[np.ndarray[Any, Any]], workers: _Workers, progress: Callable[[str], None]
) -> tuple[dict[str, float], dict[str, float]]:
    """Each engine's largest output difference from the first engine's over the agreement steps ``xs``, and
    its bound (:func:`agreement_bound`, at the first engine's largest |output|)."""
    differences: dict[str, float] = {}
    bounds: dict[str, float] = {}
    reference: list[Any] = []
    for name, (connection, _) in workers.items():
        progress(f"{label}: checking {name}")
        connection.send(("prepare", (batch, xs)))
        outputs = connection.recv()
        reference = reference or outputs
        differences[name] = max(float(np.max(np.abs(a - b))) for a, b in zip(outputs, reference, strict=True))
        bounds[name] = agreement_bound(name, max(float(np.max(np.abs(r))) for r in reference))
    return differences, bounds


def _drop_disagreeing(row: Row, workers: _Workers) -> list[str]:
    """Stop the engines of ``row`` that missed their bound (:func:`disagreeing`), each with a note saying by how
    much; their figures leave the row. The reference itself (NaN outputs) stays: every ratio is to it."""
    reference = next(iter(workers), "")
    notes = []
    for name in (e for e in disagreeing(row) if e != reference):
        difference, bound = row.max_difference.pop(name), row.bound.pop(name)
        notes.append(f"{name}: outputs differ from {reference}'s by {difference:.2e} at batch {row.batch}, "
                     f"over its bound {bound:.2e}")  # fmt: skip
        _stop_workers({name: workers.pop(name)})
    return notes


def _calibrate(x: np.ndarray[Any, Any], workers: _Workers) -> dict[str, int]:
    """Each engine's steps per timing round."""
    calls = {}
    for name, (connection, _) in workers.items():
        connection.send(("time", (x, 0)))
        calls[name] = connection.recv()
    return calls


def _median_seconds(
    label: str, x: np.ndarray[Any, Any], calls: dict[str, int], workers: _Workers, rounds: int,
    progress: Callable[[str], None],
) -> dict[str, float]:  # fmt: skip
    """Each engine's median over ``rounds`` of its mean seconds per step, the engines timed in turn."""
    samples: dict[str, list[float]] = {name: [] for name in workers}
    for r in range(rounds):
        for name, (connection, _) in workers.items():
            progress(f"{label}: round {r + 1}/{rounds} {name}")
            with _paused(process for other, (_, process) in workers.items() if other != name):
                connection.send(("time", (x, calls[name])))
                samples[name].append(connection.recv())
            time.sleep(SETTLE_SECONDS)
    return {name: statistics.median(s) for name, s in samples.items()}


def report(rows: list[Row]) -> str:
    """A table per model: time per step for each engine, and each engine's time ÷ rnnstream's (— where an engine
    was not timed at that batch); then the largest output differences, lower precisions apart with their bound."""
    lines = []
    for label in dict.fromkeys(r.model for r in rows):
        mine = [r for r in rows if r.model == label]
        engines = list(dict.fromkeys(e for r in mine for e in r.seconds))
        if not engines:
            continue
        ours = engines[0]
        lines.append(f"\n{label}: time per step (× = engine's time ÷ {ours}'s; higher means rnnstream is faster)")
        lines.append(f"{'batch':>6}  " + "  ".join(f"{e:>22}" for e in [*engines, "arithmetic limit"]))
        for r in mine:
            cells = [_cell(r, e, ours) for e in engines]
            if r.limit:
                cells.append(f"{format_seconds(r.limit):>10} ({r.limit / r.seconds[ours]:8.2f}×)")
            lines.append(f"{r.batch:>6}  " + "  ".join(f"{c:>22}" for c in cells))
        lines += _agreement_lines(mine)
    return "\n".join(lines)


def _cell(row: Row, engine: str, ours: str) -> str:
    if engine not in row.seconds:
        return "—"
    return f"{format_seconds(row.seconds[engine]):>10}" + (
        f" ({row.ratio(engine, ours):8.2f}×)" if engine != ours else " " * 12
    )


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


def run(
    model_names: tuple[str, ...], batches: tuple[int, ...], threads: int, rounds: int, *, backend: str = "auto",
    keras: bool = True, json_path: Path | None = None, png_path: Path | None = None, device: str | None = None,
) -> str:  # fmt: skip
    """The whole benchmark, printed as it goes; returns the report. With ``device`` (a torch device),
    rnnstream's DeviceBatch on it is timed too, as engine ``rnnstream-device-<cpu|cuda>``."""
    rows: list[Row] = []
    notes: list[str] = []
    engines = ENGINES if keras else tuple(e for e in ENGINES if e not in KERAS_ENGINES)
    for name in model_names:
        measured, missing = _measure_model(name, batches, engines, threads, rounds, backend, device)
        rows += measured
        notes += [m for m in missing if m not in notes]
    meta = _meta(threads, rounds, backend, device)
    return _outcome(rows, notes, meta, json_path, png_path)


def _measure_model(
    name: str, batches: tuple[int, ...], engines: tuple[str, ...], threads: int, rounds: int, backend: str,
    device: str | None,
) -> tuple[list[Row], list[str]]:  # fmt: skip
    """``measure`` for one model, in two phases: without Keras, then Keras beside rnnstream."""
    # Keras comes second, in processes of its own: TensorFlow's idle thread pools would otherwise
    # share the cores with the engines being timed. Its rows join the first phase's by batch.
    first = tuple(e for e in engines if e not in KERAS_ENGINES)
    first = (*first, DEVICE_ENGINE) if device else first
    measured, missing = measure(name, batches, first, threads, rounds, backend, _progress, device)
    keras_engines = tuple(e for e in engines if e in KERAS_ENGINES)
    if keras_engines:
        with_keras, keras_missing = measure(name, batches, ("rnnstream", *keras_engines), threads, rounds, backend,
                                            _progress, device)  # fmt: skip
        _join_keras(measured, with_keras)
        missing += keras_missing
    print("\r" + " " * 76 + "\r", end="", file=sys.stderr)
    return measured, missing


def _progress(text: str) -> None:
    print(f"\r  {text:<72}", end="", file=sys.stderr, flush=True)


def _join_keras(rows: list[Row], with_keras: list[Row]) -> None:
    """Add the Keras engines' figures of ``with_keras`` to the rows of the same batch in ``rows``."""
    for row, extra in zip(rows, with_keras, strict=True):
        keras_names = [n for n in extra.seconds if n.startswith("keras")]
        row.seconds.update({n: extra.seconds[n] for n in keras_names})
        row.max_difference.update({n: extra.max_difference[n] for n in keras_names})
        row.bound.update({n: extra.bound[n] for n in keras_names})


def _meta(threads: int, rounds: int, backend: str, device: str | None) -> dict[str, Any]:
    """The run's settings and the machine it ran on, for the JSON."""
    return {
        "threads": threads,
        "rounds": rounds,
        "backend": backend,
        "device": device,
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpus": os.cpu_count(),
    }


def _outcome(
    rows: list[Row], notes: list[str], meta: dict[str, Any], json_path: Path | None, png_path: Path | None
) -> str:
    """The report, with the engines not measured; the JSON and the chart written where asked."""
    text = report(rows)
    if notes:
        text += "\n\nnot measured: " + "; ".join(notes)
    if json_path:
        save_json(rows, json_path, meta)
        text += f"\nJSON: {json_path}"
    if png_path:
        save_chart(rows, png_path)
        text += f"\nchart: {png_path}"
    return text
