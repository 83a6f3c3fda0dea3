"""The arithmetic limit of a step: its multiply-adds at the best rate this machine's float32 matrix
product reaches (NumPy's OpenBLAS ``sgemm`` on 2,048² matrices, on the benchmark's threads).

No step can beat it on the same cores: it is the time the step's products alone would take if every
weight were in registers when needed. A step is near it when its batch is large enough to reuse each
weight many times; a small batch's step is bound by reading the weights instead.

>>> import rnnstream
>>> step_flops(rnnstream.load(rnnstream.demo.SEED_MODEL))  # 2 x (104·400 + 300·800 + 200·1)
563600
"""

from __future__ import annotations

import os
import subprocess
import sys

from rnnstream.layers.dense import Dense
from rnnstream.layers.recurrent import Recurrent
from rnnstream.model import StreamModel

_RATE = """
import time, numpy as np
a = np.random.default_rng(0).random((2048, 2048), np.float32)
a @ a
best = 0.0
for _ in range(5):
    start = time.perf_counter()
    a @ a
    best = max(best, 2 * 2048**3 / (time.perf_counter() - start))
print(best)
"""


def step_flops(model: StreamModel) -> int:
    """Floating-point operations of one stream's step in its matrix products (2 per multiply-add), over
    the Dense and recurrent layers' weight matrices."""
    total = 0
    for node in model.graph.nodes:
        layer = node.layer
        if isinstance(layer, Dense | Recurrent):
            total += sum(value.size for name, value in layer.params().items() if name in ("W", "Wx", "Wh"))
    return 2 * total


def gemm_rate(threads: int) -> float:
    """FLOP/s of NumPy's float32 matrix product on ``threads`` threads, in a process of its own (its
    OpenBLAS pool sized by the environment at start)."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads),
           "MKL_NUM_THREADS": str(threads)}  # fmt: skip
    done = subprocess.run([sys.executable, "-c", _RATE], env=env, capture_output=True, text=True, check=True)
    return float(done.stdout.strip())
