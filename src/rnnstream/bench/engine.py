"""``rnnstream bench engine``: time per step against ONNX Runtime, PyTorch and Keras, same weights.

For each model (the seed model, LSTM(100) → LSTM(200) → Dense(1); and the large one, 2 × LSTM(512)
over 128 features) and each batch size, every engine steps from a zero state. Timing rounds visit
the engines in turn (a shared machine's drift falls on all alike); the figure is the median over
rounds of the mean time per step in a round. The arithmetic limit's matrix product (:mod:`rnnstream.bench.limit`)
takes its turn in every round like an engine, and every ratio is taken round by round
(:mod:`rnnstream.bench.engine_results`). Before timing, every engine's outputs over a few steps
are checked against rnnstream's: within 1e-5 at fp32, within a bound that follows from the rounding at bf16
and int8 (:func:`agreement_bound`); an engine that misses is not timed, and a note says so. The engines, and
the process each runs in: :mod:`rnnstream.bench.engine_worker`.
"""

from __future__ import annotations

import multiprocessing
import os
import platform
import signal
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from rnnstream.bench import limit, peers
from rnnstream.bench.engine_results import (
    AGREEMENT_STEPS,
    Row,
    agreement_bound,
    disagreeing,
    report,
    save_chart,
    save_json,
)
from rnnstream.bench.engine_worker import DEVICE_ENGINE, ENGINES, KERAS_ENGINES, LIMIT, limit_worker, load_model, worker
from rnnstream.errors import RnnstreamError

DEFAULT_BATCHES = (1, 10, 256, 1024, 4096)
SETTLE_SECONDS = 0.1
"""Pause after each engine's round: thread pools that spin-wait when idle (ONNX Runtime's, OpenMP's)
go to sleep before the next engine is timed."""


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
    progress(f"{model_name}: starting the arithmetic limit's product")
    connection, process, blas = _start_limit(threads)
    product = (connection, process)
    rng = np.random.default_rng(0)
    plain = load_model(model_name, "numpy", 1)
    features, flops = plain.inputs[0].spec.shape, limit.step_flops(plain)
    rows = []
    try:
        for batch in batches:
            xs = [rng.normal(0, 1, (batch, *features)).astype(np.float32) for _ in range(AGREEMENT_STEPS)]
            row, dropped = _measure_batch(model_name, batch, xs, workers, product, rounds, progress)
            row.limit_rounds = [limit.seconds(flops, batch, s) for s in row.rounds.pop(LIMIT)]
            row.limit = statistics.median(row.limit_rounds)
            row.limit_blas = blas
            rows.append(row)
            missing += dropped
    finally:
        _stop_workers({**workers, LIMIT: product})
    return rows, missing


def _start_workers(
    model_name: str, engines: tuple[str, ...], threads: int, backend: str, progress: Callable[[str], None],
    device: str | None,
) -> tuple[_Workers, list[str]]:  # fmt: skip
    """A process per engine, ready to step; the engines that could not start, each with why."""
    workers: _Workers = {}
    missing: list[str] = []
    for engine in engines:
        progress(f"{model_name}: starting {engine}")
        environment = peers.QUIET_ENVIRONMENT if engine.endswith("-quiet") else {}
        status, detail, parent, process = _spawn(engine, worker, (engine, model_name, backend, threads, device),
                                                 environment)  # fmt: skip
        if status == "ready":
            workers[detail] = (parent, process)
        else:
            missing.append(detail)
            process.join()
    return workers, missing


def _start_limit(threads: int) -> tuple[Connection, Any, str]:
    """The process that times the arithmetic limit's product (:func:`engine_worker.limit_worker`) on ``threads``,
    and the BLAS it runs on (:func:`limit.blas`)."""
    status, detail, parent, process = _spawn(LIMIT, limit_worker, (), limit.environment(threads))
    if status != "ready":
        process.join()
        raise RnnstreamError(f"the benchmark could not time its matrix product: {detail}")
    return parent, process, detail


def _spawn(
    name: str, target: Callable[..., None], args: tuple[Any, ...], environment: dict[str, str]
) -> tuple[str, str, Connection, Any]:
    """Start ``target(connection, *args)`` in a process of its own, started with ``environment`` set; its first
    message (``ready`` and the engine's name, or ``missing`` and why), the pipe to it and the process."""
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=target, args=(child, *args), daemon=True)
    with peers.environment(environment):
        process.start()  # the child reads its environment as it starts
    child.close()  # the child's end lives in the child only: if it dies, recv() raises EOFError, never hangs
    try:
        status, detail = parent.recv()
    except EOFError:
        process.join()
        status, detail = "missing", f"{name}: its process ended before it was ready (exit {process.exitcode})"
    return status, detail, parent, process


def _stop_workers(workers: _Workers) -> None:
    for connection, process in workers.values():
        connection.send(("stop", None))
        process.join(timeout=10)


def _measure_batch(
    model_name: str, batch: int, xs: list[np.ndarray[Any, Any]], workers: _Workers,
    product: tuple[Connection, Any], rounds: int, progress: Callable[[str], None],
) -> tuple[Row, list[str]]:  # fmt: skip
    """Every engine at one batch size: checked against the first over ``xs``, then timed on ``xs[0]``, in turn
    with the limit's ``product`` (its rounds under ``LIMIT``); a note for each engine that missed its bound,
    stopped instead."""
    row = Row(model_name, batch)
    label = f"{model_name} batch {batch}"
    row.max_difference, row.bound = _differences(label, batch, xs, workers, progress)
    notes = _drop_disagreeing(row, workers)
    timed = {**workers, LIMIT: product}
    row.rounds, row.own_rounds = _rounds(label, xs[0], _calibrate(xs[0], timed), timed, rounds, progress)
    row.seconds = {name: statistics.median(s) for name, s in row.rounds.items() if name != LIMIT}
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
    """Each engine's steps per timing round, found as a round is timed: the others paused, then a settling pause
    (a neighbour's pool still spinning would shorten the next engine's rounds)."""
    calls = {}
    for name, (connection, _) in workers.items():
        with _paused(process for other, (_, process) in workers.items() if other != name):
            connection.send(("time", (x, 0)))
            calls[name] = connection.recv()
        time.sleep(SETTLE_SECONDS)
    return calls


def _rounds(
    label: str, x: np.ndarray[Any, Any], calls: dict[str, int], workers: _Workers, rounds: int,
    progress: Callable[[str], None],
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:  # fmt: skip
    """Each engine's mean seconds per step in each of ``rounds`` rounds, the engines timed in turn; and for
    each engine beside a neighbour, its own steps' in the same process and round (``Row.own_rounds``)."""
    samples: dict[str, list[float]] = {name: [] for name in workers}
    own: dict[str, list[float]] = {}
    for r in range(rounds):
        for name, (connection, _) in workers.items():
            progress(f"{label}: round {r + 1}/{rounds} {name}")
            with _paused(process for other, (_, process) in workers.items() if other != name):
                connection.send(("time", (x, calls[name])))
                answer = connection.recv()
            if isinstance(answer, tuple):
                answer, alone = answer
                own.setdefault(name, []).append(alone)
            samples[name].append(answer)
            time.sleep(SETTLE_SECONDS)
    return samples, own


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
