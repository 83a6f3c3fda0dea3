"""Where the cores go while an engine steps beside a neighbour: its time ÷ its own, and each thread's CPU share.

    .venv/bin/python scripts/beside_threads.py --batch 256
    .venv/bin/python scripts/beside_threads.py --subjects onnxruntime --batch 1 --neighbours evict pause

For each subject engine (``rnnstream``: ``model.step``; ``onnxruntime``: its session, spinning as by default) a
process of its own builds the seed model's step and the neighbours of ``rnnstream bench engine``
(:func:`rnnstream.bench.peers.beside_peer`), then for each neighbour in turn, ``--repeats`` times: ``--steps`` steps
back to back (its own time), then as many with the neighbour called before each (untimed), each step timed. It
prints the median ratio of the two (and the spread), and the busiest threads' share of a core over the steps
beside the neighbour, from ``/proc/self/task/*/schedstat`` (Linux): the caller's, the neighbour pool's and the
kernel's helper's. On two cores a neighbour's thread that holds a core's share ``s`` leaves the step's two
threads ``2 - s`` cores, so at best it takes ``2 / (2 - s)`` its own time. ``-quiet`` neighbours start with
``OPENBLAS_THREAD_TIMEOUT=4``, like the bench's. Last, the floor under a step whose weights a neighbour took from
the caches: one thread reading as many bytes as the model's weights (an OpenBLAS dot product), from its core's
caches and after the ``evict`` neighbour's read.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

SUBJECT = """
import os, statistics, sys, time
import numpy as np
from rnnstream.bench import peers
from rnnstream.bench.engine_worker import load_model

subject, batch, steps, repeats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
neighbours = sys.argv[5:]


def busy_ns():
    shares = {}
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/schedstat") as f:
                shares[task] = int(f.read().split()[0])
        except OSError:
            pass
    return shares


model = load_model("seed", "auto", 2)
x = np.random.default_rng(0).normal(0, 1, (batch, 4)).astype(np.float32)
pairs = {n: peers.beside_peer(model, subject, n, 2) for n in neighbours}
for name, peer in pairs.items():
    step, neighbour = peer.make(batch), peer.neighbour(batch)
    for _ in range(steps):
        step(x)
    ratios, shares = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            step(x)
        own = (time.perf_counter() - start) / steps
        before, wall, beside = busy_ns(), time.perf_counter(), 0.0
        for _ in range(steps):
            neighbour(x)
            start = time.perf_counter()
            step(x)
            beside += time.perf_counter() - start
        wall, after = time.perf_counter() - wall, busy_ns()
        ratios.append(beside / steps / own)
        shares.append(sorted(((after[t] - before.get(t, 0)) / 1e9 / wall for t in after), reverse=True)[:3])
        time.sleep(0.3)
    middle = sorted(range(repeats), key=lambda i: ratios[i])[repeats // 2]
    busiest = " ".join(f"{s:.2f}" for s in shares[middle])
    print(f"{subject:<11} {batch:>5} {name:<10} {statistics.median(ratios):5.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"
          f"  own {own * 1e6:8.1f} us  busiest threads' cores: {busiest}", flush=True)
"""

COLD_READ = """
import statistics, time
import numpy as np
from rnnstream.bench import peers
from rnnstream.bench.engine_worker import load_model

model = load_model("seed", "numpy", 1)
weights = sum(a.nbytes for n in model.graph.nodes for a in vars(n.layer).values() if isinstance(a, np.ndarray))
a, b = np.ones(weights // 8, np.float32), np.ones(weights // 8, np.float32)  # a dot product reads both: the bytes
evict = peers.beside_peer(model, "rnnstream", "evict", 1).neighbour(1)
cold, warm = [], []
for _ in range(300):
    evict(a)
    start = time.perf_counter()
    np.dot(a, b)
    middle = time.perf_counter()
    np.dot(a, b)
    cold.append(middle - start)
    warm.append(time.perf_counter() - middle)
print(f"reading the seed model's {weights / 2**20:.2f} MiB of weights on one thread: "
      f"{statistics.median(warm) * 1e6:.1f} us from its core's caches, {statistics.median(cold) * 1e6:.1f} us after "
      "the evict neighbour")
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects", nargs="+", default=["rnnstream", "onnxruntime"])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--neighbours", nargs="+", default=["ort", "blas", "ort-quiet", "blas-quiet", "pause", "evict"])
    parser.add_argument("--steps", type=int, help="steps per timing (default: 3,000 at batch 1, 300 above)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    steps = args.steps or (3000 if args.batch == 1 else 300)
    print("subject     batch neighbour  beside ÷ own      own time      busiest threads' share of a core")
    for subject in args.subjects:
        for quiet in (False, True):  # OpenBLAS reads its thread timeout when NumPy loads it: a process each
            chosen = [n for n in args.neighbours if (n == "blas-quiet") == quiet]
            if subject == "onnxruntime":
                chosen = [n for n in chosen if not n.startswith("ort")]  # not beside another session of itself
            if not chosen:
                continue
            env = {**os.environ, **({"OPENBLAS_THREAD_TIMEOUT": "4"} if quiet else {})}
            command = [sys.executable, "-c", SUBJECT, subject, str(args.batch), str(steps), str(args.repeats)]
            subprocess.run([*command, *chosen], env=env, check=True)
            time.sleep(0.5)
    subprocess.run([sys.executable, "-c", COLD_READ], check=True)


if __name__ == "__main__":
    main()
