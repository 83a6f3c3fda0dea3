"""``rnnstream bench engine``: time per step against ONNX Runtime, PyTorch and Keras, same weights.

For each model (the seed model, LSTM(100) → LSTM(200) → Dense(1); and the large one, 2 × LSTM(512)
over 128 features) and each batch size, every engine steps from a zero state. Timing rounds visit
the engines in turn (a shared machine's drift falls on all alike); the figure is the median over
rounds of the mean time per step in a round. Before timing, every engine's outputs over a few steps
are checked against rnnstream's (≤ 1e-5).
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
from rnnstream.bench.timing import format_seconds
from rnnstream.errors import InputError, MissingDependencyError
from rnnstream.model import StreamModel

DEFAULT_BATCHES = (1, 10, 256, 1024, 4096)
ROUND_SECONDS = 0.04
AGREEMENT_STEPS = 5
SETTLE_SECONDS = 0.1
"""Pause after each engine's round: thread pools that spin-wait when idle (ONNX Runtime's, OpenMP's)
go to sleep before the next engine is timed."""


@dataclass
class Row:
    model: str
    batch: int
    seconds: dict[str, float] = field(default_factory=dict)  # engine → median seconds per step
    max_difference: dict[str, float] = field(default_factory=dict)  # engine → vs rnnstream
    limit: float = 0.0  # the arithmetic limit's seconds per step (bench/limit.py)

    def ratio(self, engine: str, reference: str) -> float:
        return self.seconds[engine] / self.seconds[reference]


ENGINES = (
    "rnnstream", "rnnstream-stepper", "rnnstream-bf16", "rnnstream-bf16-widen", "rnnstream-beside-ort",
    "rnnstream-beside-ort-quiet", "rnnstream-beside-blas", "rnnstream-beside-blas-quiet",
    "onnxruntime", "pytorch", "keras-predict", "keras-call",
)  # fmt: skip
KERAS_ENGINES = ("keras-predict", "keras-call")
PRECISION_ENGINES = {"rnnstream-bf16": "bf16", "rnnstream-bf16-widen": "bf16-widen"}
"""model.step at a bf16 precision (rnnstream.precision): ``bf16`` is bf16-dot where it is the faster (AMX, or an
AMD CPU's AVX512_BF16: rnnstream.backends.fused.bf16_dot_fast), else the same as bf16-widen."""
DEVICE_ENGINE = "rnnstream-device"
"""Optional: rnnstream's DeviceBatch, the state resident on a torch device (``run(..., device=...)``)."""


def _load(
    model_name: str, backend: str, threads: int, device: str | None = None, precision: str = "fp32"
) -> StreamModel:
    from rnnstream.demo import SEED_MODEL
    from rnnstream.demo.builtin import build
    from rnnstream.importers import load

    model = load(SEED_MODEL) if model_name == "seed" else build(model_name)
    where = device if backend == "torch" else None
    return model.set_backend(backend, threads=threads, device=where, precision=precision)


def _peer(engine: str, model: StreamModel, threads: int, device: str | None) -> peers.Peer:
    if engine in ("rnnstream", *PRECISION_ENGINES):
        return peers.rnnstream_peer(model)
    if engine == "rnnstream-stepper":
        return peers.rnnstream_peer(model, bound=True)
    if engine.startswith("rnnstream-beside-"):
        return peers.beside_peer(model, engine.removeprefix("rnnstream-beside-"), threads)
    if engine == DEVICE_ENGINE:
        return peers.device_batch_peer(model, threads, device)
    if engine == "onnxruntime":
        return peers.onnxruntime_peer(model, threads)
    if engine == "pytorch":
        return peers.pytorch_peer(model, threads)
    if engine not in ENGINES:
        raise InputError(f"unknown engine {engine!r}; engines: {', '.join(ENGINES)}")
    predict, call = peers.keras_peers(model)
    return predict if engine == "keras-predict" else call


def _worker(
    connection: Connection, engine: str, model_name: str, backend: str, threads: int, device: str | None
) -> None:
    """One engine in its own process: its thread pools never spin on the cores another engine is using."""
    try:
        precision = PRECISION_ENGINES.get(engine, "fp32")
        peer = _peer(engine, _load(model_name, backend, threads, device, precision), threads, device)
        connection.send(("ready", peer.name))
    except Exception as e:
        connection.send(("missing", f"{engine}: {e}"))
        return
    step: peers.StepFn = peer.make(1)
    beside: peers.StepFn | None = None
    while True:
        command, argument = connection.recv()
        if command == "stop":
            return
        if command == "prepare":  # a fresh zero state for this batch; outputs of the agreement steps
            batch, xs = argument
            check = peer.make(batch)
            outputs = [np.array(check(x)).reshape(batch, -1) for x in xs]
            step = peer.make(batch)
            beside = None if peer.neighbour is None else peer.neighbour(batch)
            connection.send(outputs)
        elif command == "time":
            x, calls = argument
            connection.send(_time_steps(step, beside, x, calls))


def _time_steps(step: peers.StepFn, beside: peers.StepFn | None, x: np.ndarray[Any, Any], calls: int) -> float | int:
    """Mean seconds per step over ``calls`` steps (``beside`` run before each, untimed); with ``calls`` 0,
    how many steps make about ROUND_SECONDS."""
    if calls == 0:  # calibrate
        start = time.perf_counter()
        step(x)
        step(x)
        once = max((time.perf_counter() - start) / 2, 1e-7)
        return max(1, min(2000, int(ROUND_SECONDS / once)))
    if beside is None:
        start = time.perf_counter()
        for _ in range(calls):
            step(x)
        return (time.perf_counter() - start) / calls
    total = 0.0
    for _ in range(calls):
        beside(x)
        start = time.perf_counter()
        step(x)
        total += time.perf_counter() - start
    return total / calls


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
    """Rows for ``model_name`` at each batch size, and a note for each engine that could not run.

    ``device`` is the torch device of backend ``torch`` and of the ``rnnstream-device`` engine."""
    workers, missing = _start_workers(model_name, engines, threads, backend, progress, device)
    rng = np.random.default_rng(0)
    plain = _load(model_name, "numpy", 1)
    features = plain.inputs[0].spec.shape
    progress(f"{model_name}: the arithmetic limit")
    seconds_per_flop = 1 / limit.gemm_rate(threads)
    rows = []
    try:
        for batch in batches:
            xs = [rng.normal(0, 1, (batch, *features)).astype(np.float32) for _ in range(AGREEMENT_STEPS)]
            rows.append(_measure_batch(model_name, batch, xs, workers, rounds, progress))
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
        process = context.Process(target=_worker, args=(child, engine, model_name, backend, threads, device),
                                  daemon=True)  # fmt: skip
        with peers.environment(peers.QUIET_ENVIRONMENT if engine.endswith("-quiet") else {}):
            process.start()  # the child reads its environment as it starts
        status, detail = parent.recv()
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
) -> Row:  # fmt: skip
    """Every engine at one batch size: checked against the first over ``xs``, then timed on ``xs[0]``."""
    row = Row(model_name, batch)
    label = f"{model_name} batch {batch}"
    row.max_difference = _differences(label, batch, xs, workers, progress)
    calls = _calibrate(xs[0], workers)
    row.seconds = _median_seconds(label, xs[0], calls, workers, rounds, progress)
    return row


def _differences(
    label: str, batch: int, xs: list[np.ndarray[Any, Any]], workers: _Workers, progress: Callable[[str], None]
) -> dict[str, float]:
    """Each engine's largest output difference from the first engine's over the agreement steps ``xs``."""
    differences = {}
    reference: list[Any] = []
    for name, (connection, _) in workers.items():
        progress(f"{label}: checking {name}")
        connection.send(("prepare", (batch, xs)))
        outputs = connection.recv()
        reference = reference or outputs
        differences[name] = max(float(np.max(np.abs(a - b))) for a, b in zip(outputs, reference, strict=True))
    return differences


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
    """A table per model: time per step for each engine, and each engine's time ÷ rnnstream's."""
    lines = []
    for label in dict.fromkeys(r.model for r in rows):
        mine = [r for r in rows if r.model == label]
        engines = list(mine[0].seconds)
        ours = engines[0]
        lines.append(f"\n{label}: time per step (× = engine's time ÷ {ours}'s; higher means rnnstream is faster)")
        lines.append(f"{'batch':>6}  " + "  ".join(f"{e:>22}" for e in [*engines, "arithmetic limit"]))
        for r in mine:
            cells = [f"{format_seconds(r.seconds[e]):>10}" + (f" ({r.ratio(e, ours):8.2f}×)" if e != ours else " " * 12)
                     for e in engines]  # fmt: skip
            if r.limit:
                cells.append(f"{format_seconds(r.limit):>10} ({r.limit / r.seconds[ours]:8.2f}×)")
            lines.append(f"{r.batch:>6}  " + "  ".join(f"{c:>22}" for c in cells))
        worst = max(d for r in mine for e, d in r.max_difference.items() if "bf16" not in e)
        lines.append(f"largest output difference from rnnstream over {AGREEMENT_STEPS} steps: {worst:.2e}")
        bf16 = [d for r in mine for e, d in r.max_difference.items() if "bf16" in e]
        if bf16:
            lines.append(f"  of which bf16 weights (rounded, so not within 1e-5): {max(bf16):.2e}")
    return "\n".join(lines)


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
        for engine in mine[0].seconds:
            ax.plot([r.batch for r in mine], [r.seconds[engine] * 1e6 for r in mine], marker="o", label=engine)
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
