"""The engines of ``rnnstream bench engine`` and the process each one runs in.

Every engine steps in a process of its own (:func:`worker`), so that its thread pools never spin on the
cores another engine is using; :mod:`rnnstream.bench.engine` starts them, checks their outputs against
each other and times them in turn. This module is the process's side: which engines there are, how each
is built from the model (:func:`make_peer`, from :mod:`rnnstream.bench.peers`), and the timed loop.
"""

from __future__ import annotations

import time
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from rnnstream.bench import limit, peers
from rnnstream.errors import InputError
from rnnstream.model import StreamModel

ROUND_SECONDS = 0.25
"""About how long one engine's timing round lasts (its steps per round are calibrated to it). With 40 ms rounds a
VM's bursts of stolen time decided single rounds: on a 2-core Xeon, seven rnnstream processes' fp32 steps (seed
model, 256 rows) came to 1.15-1.71x the arithmetic limit in three runs; with 0.25 s, 1.12-1.23x."""
CALIBRATION_SECONDS = 0.05
"""How long an engine steps, after one untimed step, to find its steps per round. Its first steps after a pause
are slow (caches cooled by the other engines' rounds, helper threads asleep: on a 2-core Zen 5 the stepper's first
took 82 µs at batch 1, then 12-32, its first 250 a median of 6.9 against 5.4 after), so two steps would undercount
the round; and rounds once capped at 2,000 steps lasted 10-20 ms at batch 1, where those first steps weighed on the
stepper's mean: 7.5-8.4 µs in the benchmark against 5.1-5.7 in a long loop of its own."""

ENGINES = (
    "rnnstream", "rnnstream-stepper", "rnnstream-bf16", "rnnstream-bf16-widen", "rnnstream-int8",
    "rnnstream-beside-ort", "rnnstream-beside-ort-quiet", "rnnstream-beside-blas", "rnnstream-beside-blas-quiet",
    "rnnstream-beside-pause", "rnnstream-beside-evict",
    "onnxruntime", "onnxruntime-int8",
    "onnxruntime-beside-blas", "onnxruntime-beside-blas-quiet", "onnxruntime-beside-pause", "onnxruntime-beside-evict",
    "pytorch", "keras-predict", "keras-call",
)  # fmt: skip
KERAS_ENGINES = ("keras-predict", "keras-call")
PRECISION_ENGINES = {"rnnstream-bf16": "bf16", "rnnstream-bf16-widen": "bf16-widen", "rnnstream-int8": "int8"}
"""model.step at a lower precision (rnnstream.precision): ``bf16`` is bf16-dot where it is the faster (AMX, or an
AMD CPU's AVX512_BF16: rnnstream.backends.fused.bf16_dot_fast), else the same as bf16-widen; ``int8`` is the
fused kernel's int8 path only, AVX512_VNNI or AVX2 (the NumPy backend's emulation is no engine to time)."""
LIMIT = "arithmetic limit"
"""Not an engine: the matrix product timed in turn with them (:func:`limit_worker`)."""
DEVICE_ENGINE = "rnnstream-device"
"""Optional: rnnstream's DeviceBatch, the state resident on a torch device (``run(..., device=...)``)."""


def load_model(
    model_name: str, backend: str, threads: int, device: str | None = None, precision: str = "fp32"
) -> StreamModel:
    """The seed model or a built-in one, on ``backend`` at ``precision``."""
    from rnnstream.demo import SEED_MODEL
    from rnnstream.demo.builtin import build
    from rnnstream.importers import load

    model = load(SEED_MODEL) if model_name == "seed" else build(model_name)
    where = device if backend == "torch" else None
    return model.set_backend(backend, threads=threads, device=where, precision=precision)


def make_peer(engine: str, model: StreamModel, threads: int, device: str | None) -> peers.Peer:
    """The peer that steps ``engine`` on ``model`` (loaded at the engine's precision)."""
    if engine == "rnnstream-int8" and model.backend.name != "fused":
        raise InputError(
            f"only the fused kernel computes int8 (backend {model.backend.name!r} would emulate it, far slower); "
            "run with --backend fused"
        )
    if engine in ("rnnstream", *PRECISION_ENGINES):
        return peers.rnnstream_peer(model)
    if engine == "rnnstream-stepper":
        return peers.rnnstream_peer(model, bound=True)
    subject, beside, neighbour = engine.partition("-beside-")
    if beside and engine in ENGINES:
        return peers.beside_peer(model, subject, neighbour, threads)
    if engine == DEVICE_ENGINE:
        return peers.device_batch_peer(model, threads, device)
    if engine in ("onnxruntime", "onnxruntime-int8"):
        return peers.onnxruntime_peer(model, threads, int8=engine == "onnxruntime-int8")
    if engine == "pytorch":
        return peers.pytorch_peer(model, threads)
    if engine not in ENGINES:
        raise InputError(f"unknown engine {engine!r}; engines: {', '.join(ENGINES)}")
    predict, call = peers.keras_peers(model)
    return predict if engine == "keras-predict" else call


def worker(
    connection: Connection, engine: str, model_name: str, backend: str, threads: int, device: str | None
) -> None:
    """One engine in its own process: ``("ready", name)`` or ``("missing", why)`` first, then it answers
    ``prepare`` (a fresh zero state for a batch; the outputs of the agreement steps), ``time`` (:func:`time_steps`;
    an engine beside a neighbour, :func:`time_beside`; with 0 calls, :func:`round_calls`) and ``stop``."""
    try:
        precision = PRECISION_ENGINES.get(engine, "fp32")
        model = load_model(model_name, backend, threads, device, precision)
        peer = make_peer(engine, model, threads, device)
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
        if command == "prepare":
            batch, xs = argument
            check = peer.make(batch)
            outputs = [np.array(check(x)).reshape(batch, -1) for x in xs]
            step = peer.make(batch)
            beside = None if peer.neighbour is None else peer.neighbour(batch)
            connection.send(outputs)
        elif command == "time":
            x, calls = argument
            if calls == 0:
                connection.send(round_calls(step if beside is None else _after(beside, step), x))
            elif beside is not None:
                connection.send(time_beside(step, beside, x, calls))
            else:
                connection.send(time_steps(step, x, calls))


def _after(neighbour: peers.StepFn, step: peers.StepFn) -> peers.StepFn:
    """``step`` with ``neighbour`` called before it, as an engine beside a neighbour runs its round."""

    def both(x: np.ndarray[Any, Any]) -> Any:
        neighbour(x)
        return step(x)

    return both


def round_calls(step: peers.StepFn, x: np.ndarray[Any, Any]) -> int:
    """How many calls of ``step`` make about ROUND_SECONDS, from its mean over CALIBRATION_SECONDS of calls (at
    least two) after an untimed first one."""
    step(x)
    calls, start = 0, time.perf_counter()
    while True:
        step(x)
        calls += 1
        elapsed = time.perf_counter() - start
        if calls >= 2 and elapsed >= CALIBRATION_SECONDS:
            return max(1, round(ROUND_SECONDS * calls / elapsed))


def time_steps(step: peers.StepFn, x: np.ndarray[Any, Any], calls: int) -> float:
    """Mean seconds per step over ``calls`` steps back to back."""
    start = time.perf_counter()
    for _ in range(calls):
        step(x)
    return (time.perf_counter() - start) / calls


def time_beside(step: peers.StepFn, beside: peers.StepFn, x: np.ndarray[Any, Any], calls: int) -> tuple[float, float]:
    """Mean seconds per step with ``beside`` (the neighbour) called before each step, untimed, each step timed on
    its own; and first, in the same process, its own time: ``calls`` steps back to back without the neighbour,
    timed as a whole. Their ratio is the neighbour's cost alone: a process's own memory and threads' placement
    (two processes' steps differed by 0.61-1.41x on a 2-core VM) fall on both figures alike. The own steps come
    after the pause between rounds, long enough for the kernel to forget that its helpers were late beside the
    last round's neighbour (work_pool.c: LATE_FORGOTTEN_NS), so they start as in a fresh process."""
    own = time_steps(step, x, calls)
    total = 0.0
    for _ in range(calls):
        beside(x)
        start = time.perf_counter()
        step(x)
        total += time.perf_counter() - start
    return total / calls, own


def limit_worker(connection: Connection) -> None:
    """The arithmetic limit's process (:mod:`rnnstream.bench.limit`): ``("ready", its BLAS)``, then it answers
    ``time`` (mean seconds per float32 matrix product, or with 0 calls how many make a round) and ``stop``.
    Its threads are set by the environment it starts with (:func:`rnnstream.bench.limit.environment`)."""
    product = limit.product()
    connection.send(("ready", limit.blas()))
    while True:
        command, argument = connection.recv()
        if command == "stop":
            return
        x, calls = argument
        connection.send(time_steps(product, x, calls) if calls else round_calls(product, x))
