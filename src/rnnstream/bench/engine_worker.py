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
"""About how long one engine's timing round lasts (its steps per round are calibrated to it, at most 2,000). With
40 ms rounds a VM's bursts of stolen time decided single rounds: on a 2-core Xeon, seven rnnstream processes' fp32
steps (seed model, 256 rows) came to 1.15-1.71x the arithmetic limit in three runs; with 0.25 s, 1.12-1.23x."""

ENGINES = (
    "rnnstream", "rnnstream-stepper", "rnnstream-bf16", "rnnstream-bf16-widen", "rnnstream-int8",
    "rnnstream-beside-ort", "rnnstream-beside-ort-quiet", "rnnstream-beside-blas", "rnnstream-beside-blas-quiet",
    "rnnstream-beside-pause",
    "onnxruntime", "onnxruntime-int8", "pytorch", "keras-predict", "keras-call",
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
    if engine.startswith("rnnstream-beside-"):
        return peers.beside_peer(model, engine.removeprefix("rnnstream-beside-"), threads)
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
    an engine beside a neighbour, :func:`time_beside`) and ``stop``."""
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
            if beside is not None and calls > 0:
                connection.send(time_beside(step, beside, x, calls))
            else:
                connection.send(time_steps(step, x, calls))


def time_steps(step: peers.StepFn, x: np.ndarray[Any, Any], calls: int) -> float | int:
    """Mean seconds per step over ``calls`` steps back to back; with ``calls`` 0, how many steps make about
    ROUND_SECONDS."""
    if calls == 0:  # calibrate
        start = time.perf_counter()
        step(x)
        step(x)
        once = max((time.perf_counter() - start) / 2, 1e-7)
        return max(1, min(2000, int(ROUND_SECONDS / once)))
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
    """The arithmetic limit's process (:mod:`rnnstream.bench.limit`): ``("ready", LIMIT)``, then it answers
    ``time`` (mean seconds per float32 matrix product, or with 0 calls how many make a round) and ``stop``.
    Its threads are set by the environment it starts with (:func:`rnnstream.bench.limit.environment`)."""
    product = limit.product()
    connection.send(("ready", LIMIT))
    while True:
        command, argument = connection.recv()
        if command == "stop":
            return
        x, calls = argument
        connection.send(time_steps(product, x, calls))
