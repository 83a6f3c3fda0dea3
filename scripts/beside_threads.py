"""Where the cores go while an engine steps beside a neighbour: its time ÷ its own, and each thread's CPU share.

    .venv/bin/python scripts/beside_threads.py --batch 256
    .venv/bin/python scripts/beside_threads.py --subjects onnxruntime --batch 1 --neighbours evict pause

For each subject engine (``rnnstream``: ``model.step``; ``onnxruntime``: its session, spinning as by default) a
process of its own builds the seed model's step and the neighbours of ``rnnstream bench engine``
(:func:`rnnstream.bench.peers.beside_peer`), then for each neighbour in turn, ``--repeats`` times: ``--steps`` steps
back to back (its own time), then as many with the neighbour called before each (untimed), each step timed. It
prints the median ratio of the two (and the spread), the own time of that median repeat, and each thread's share
of a core while the steps beside the neighbour ran (each thread's CPU clock, read just before and after each
step): the calling thread's, rnnstream's helpers' (named ``rnnstream-pool``), OpenBLAS's (made when NumPy loads)
and the other threads' (ONNX Runtime's). Each step reads every thread's clock twice, which weighs on a batch-1
step's time and the caller's share. The ``blas-quiet`` neighbour's process starts with
``OPENBLAS_THREAD_TIMEOUT=4``, like the bench's ``-quiet`` engines. Last, what cooled caches cost the kernel alone:
the seed model's stepper on one thread, back to back and after the ``evict`` neighbour's read.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import numpy as np

BLAS_THREADS = set(os.listdir("/proc/self/task")) - {str(os.getpid())}
"""OpenBLAS's threads: the only ones NumPy's import has made (before ONNX Runtime's and rnnstream's)."""


class Threads:
    """This process's threads (found when made) and the CPU time each has used so far: Linux's per-thread CPU clocks,
    exact to the nanosecond also for a thread running on the other core (``/proc``'s counters move at ticks)."""

    def __init__(self) -> None:
        self.clocks: dict[str, int] = {}
        for task in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{task}/comm") as f:
                name = f.read().strip()
            role = "caller" if int(task) == os.getpid() else "helper" if name == "rnnstream-pool" else "other"
            role = "blas" if task in BLAS_THREADS else role
            self.clocks[f"{role} {task}"] = (~int(task) << 3) | 6  # the kernel's CPUCLOCK_SCHED of thread `task`

    def busy_ns(self) -> dict[str, int]:
        return {key: time.clock_gettime_ns(clock) for key, clock in self.clocks.items()}


def time_beside(
    step: Any, neighbour: Any, x: np.ndarray[Any, Any], steps: int
) -> tuple[float, float, dict[str, float]]:
    """Mean seconds per step back to back, then beside the neighbour; each thread's share of a core over the latter."""
    from rnnstream.bench.engine_worker import time_steps

    own = time_steps(step, x, steps)
    threads, beside, wall = Threads(), 0.0, 0.0
    busy = dict.fromkeys(threads.clocks, 0)
    for _ in range(steps):
        neighbour(x)
        opened = time.perf_counter()
        before = threads.busy_ns()
        start = time.perf_counter()
        step(x)
        beside += time.perf_counter() - start
        after = threads.busy_ns()
        wall += time.perf_counter() - opened
        for key in busy:
            busy[key] += after[key] - before[key]
    return own, beside / steps, {key: ns / 1e9 / wall for key, ns in busy.items()}


def subject_main(subject: str, batch: int, steps: int, repeats: int, neighbours: list[str]) -> None:
    """One subject engine beside each neighbour in turn, in this process."""
    from rnnstream.bench import peers
    from rnnstream.bench.engine_worker import load_model

    model = load_model("seed", "auto", 2)
    x = np.random.default_rng(0).normal(0, 1, (batch, 4)).astype(np.float32)
    for name in neighbours:
        peer = peers.beside_peer(model, subject, name, 2)
        assert peer.neighbour is not None
        step, neighbour = peer.make(batch), peer.neighbour(batch)
        for _ in range(steps):
            neighbour(x)
            step(x)
        runs = []
        for _ in range(repeats):
            time.sleep(0.3)  # the neighbour's pool stops spinning before the own steps, as between bench rounds
            own, beside, shares = time_beside(step, neighbour, x, steps)
            runs.append((beside / own, own, shares))
        ratios = [r[0] for r in runs]
        _, own, shares = sorted(runs, key=lambda r: r[0])[(repeats - 1) // 2]
        roles = {role: sorted((s for k, s in shares.items() if k.startswith(role)), reverse=True)
                 for role in ("caller", "helper", "blas", "other")}  # fmt: skip
        cores = "  ".join(f"{role} {' '.join(f'{s:.2f}' for s in found[:2]) or '-'}" for role, found in roles.items())
        print(f"{subject:<11} {batch:>5} {name:<10} {statistics.median(ratios):5.2f}x ({min(ratios):.2f}-"
              f"{max(ratios):.2f})  own {own * 1e6:8.1f} us  cores: {cores}", flush=True)  # fmt: skip


def cold_main() -> None:
    """The seed model's stepper on one thread at batch 1: back to back, and after the evict neighbour's read."""
    from rnnstream.bench import peers
    from rnnstream.bench.engine_worker import load_model

    model = load_model("seed", "auto", 1)
    step = model.stepper(batch_size=1)
    evict = peers.beside_peer(model, "rnnstream", "evict", 1).neighbour
    assert evict is not None
    cool, x = evict(1), np.ones((1, 4), np.float32)
    cold, warm = [], []
    for _ in range(1000):
        cool(x)
        start = time.perf_counter()
        step(x)
        middle = time.perf_counter()
        step(x)
        cold.append(middle - start)
        warm.append(time.perf_counter() - middle)
    print(f"seed model's stepper on one thread, batch 1: {statistics.median(warm) * 1e6:.1f} us back to back, "
          f"{statistics.median(cold) * 1e6:.1f} us after the evict neighbour's read (medians of 1,000)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects", nargs="+", default=["rnnstream", "onnxruntime"])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--neighbours", nargs="+", default=["ort", "blas", "ort-quiet", "blas-quiet", "pause", "evict"])
    parser.add_argument("--steps", type=int, help="steps per timing (default: 3,000 at batch 1, 300 above)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == ["cold"]:
        cold_main()
    elif args.child:
        subject_main(args.child[0], args.batch, args.steps, args.repeats, args.child[1:])
    if args.child:
        return
    steps = args.steps or (3000 if args.batch == 1 else 300)
    common = [sys.executable, __file__, "--batch", str(args.batch), "--steps", str(steps)]
    common += ["--repeats", str(args.repeats)]
    print("subject     batch neighbour  beside ÷ own      own time      each thread's share of a core beside it")
    for subject in args.subjects:
        for quiet in (False, True):  # OpenBLAS reads its thread timeout when NumPy loads it: a process each
            chosen = [n for n in args.neighbours if (n == "blas-quiet") == quiet]
            if subject == "onnxruntime":
                chosen = [n for n in chosen if not n.startswith("ort")]  # not beside another session of itself
            if chosen:
                env = {**os.environ, **({"OPENBLAS_THREAD_TIMEOUT": "4"} if quiet else {})}
                subprocess.run([*common, "--child", subject, *chosen], env=env, check=True)
                time.sleep(0.5)
    subprocess.run([*common, "--child", "cold"], check=True)


if __name__ == "__main__":
    main()
