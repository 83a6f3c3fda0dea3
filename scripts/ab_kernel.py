"""A/B the fused kernel between two source trees: one layer's or the seed model's step, in alternating processes.

    .venv/bin/python scripts/ab_kernel.py /path/to/baseline/src --layer lstm 200 100 --batch 256 --threads 1
    .venv/bin/python scripts/ab_kernel.py /path/to/baseline/src --batch 256 --threads 2 --pairs 8

Each run is a fresh process that builds the step (the seed model, or one Dense / LSTM / GRU layer of UNITS units
over FEATURES inputs, random weights), warms it, then times the stepper's calls for ``--seconds`` and prints their
median and fastest. Run A is the baseline tree (its ``src`` on PYTHONPATH, its kernel built in place: ``python
setup.py build_ext --inplace`` in that tree), run B this checkout; they alternate, so the machine's drift falls on
both, and the pairs' ratios B ÷ A are reported with their median (``RNNSTREAM_THREADS`` sets the kernel's threads).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

TIMER = """
import sys, time
import numpy as np
import rnnstream
from rnnstream.graph import GraphBuilder
from rnnstream.layers.dense import Dense
from rnnstream.layers.layer import TensorSpec
from rnnstream.layers.recurrent import GRU, LSTM
kind, units, features = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
batch, seconds = int(sys.argv[4]), float(sys.argv[5])
rng = np.random.default_rng(0)
w = lambda *shape: rng.normal(0.0, 0.5, shape).astype(np.float32)
if kind == "seed":
    model = rnnstream.load(rnnstream.demo.SEED_MODEL)
    features = model.graph.inputs[0].spec.shape[0]
else:
    layer = {
        "dense": lambda: Dense("d", W=w(features, units), b=w(units), activation="sigmoid"),
        "lstm": lambda: LSTM("l", Wx=w(features, 4 * units), Wh=w(units, 4 * units), b=w(4 * units)),
        "gru": lambda: GRU("g", Wx=w(features, 3 * units), Wh=w(units, 3 * units), bx=w(3 * units),
                           bh=w(3 * units), reset_after=True),
    }[kind]()
    g = GraphBuilder()
    x = g.add_input("x", TensorSpec((features,)))
    (y, *_) = g.add_node(layer.name, layer, [x])
    model = rnnstream.StreamModel(g.build([y], ["y"]), backend="fused")
step = model.stepper(batch)
xs = rng.standard_normal((batch, features)).astype(np.float32)
for _ in range(30):
    step(xs)
times, end = [], time.perf_counter() + seconds
while time.perf_counter() < end:
    start = time.perf_counter()
    step(xs)
    times.append(time.perf_counter() - start)
print(np.median(times) * 1e6, np.min(times) * 1e6)
"""


def run(src: Path, args: argparse.Namespace) -> tuple[float, float]:
    """One process on the tree at ``src``: the step's median and fastest time in µs."""
    env = {**os.environ, "PYTHONPATH": str(src), "RNNSTREAM_THREADS": str(args.threads)}
    kind, units, features = args.layer or ("seed", "0", "0")
    argv = [kind, units, features, str(args.batch), str(args.seconds)]
    out = subprocess.run([sys.executable, "-c", TIMER, *argv], env=env, capture_output=True, text=True, check=True)
    median, fastest = out.stdout.split()
    return float(median), float(fastest)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("baseline", type=Path, help="the baseline tree's src directory")
    parser.add_argument(
        "--layer",
        nargs=3,
        metavar=("KIND", "UNITS", "FEATURES"),
        help="one layer (dense, lstm or gru) instead of the seed model",
    )
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args()
    this = Path(__file__).resolve().parent.parent / "src"
    pairs = []
    for i in range(args.pairs):
        a, b = run(args.baseline, args), run(this, args)
        pairs.append((a, b))
        print(
            f"pair {i + 1}: A median {a[0]:.1f} µs (fastest {a[1]:.1f}), B {b[0]:.1f} µs ({b[1]:.1f}), "
            f"B ÷ A {b[0] / a[0]:.3f}",
            flush=True,
        )
    ratios = [b[0] / a[0] for a, b in pairs]
    for name, side in (("A", 0), ("B", 1)):
        medians = [pair[side][0] for pair in pairs]
        print(
            f"{name}: median {statistics.median(medians):.1f} µs ({min(medians):.1f}-{max(medians):.1f}), "
            f"fastest {min(pair[side][1] for pair in pairs):.1f} µs"
        )
    print(f"B ÷ A: median {statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f})")


if __name__ == "__main__":
    main()
