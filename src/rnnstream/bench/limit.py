"""The arithmetic limit of a step: its multiply-adds at the rate this machine's float32 matrix product
reaches (NumPy's OpenBLAS ``sgemm`` on 2,048² matrices, on the benchmark's threads).

``rnnstream bench engine`` times the product in a process of its own, in turn with the engines, each
round as long as theirs: the limit of a round is the step's FLOPs at that round's rate, and an engine's
ratio to it is taken round by round. On a shared machine whose speed drifts by ±20% from one second to
the next, a rate measured once (the best of five products, as before) set each engine against the
machine's fastest moment instead of its own.

No step can beat it on the same cores: it is the time the step's products alone would take if every
weight were in registers when needed. A step is near it when its batch is large enough to reuse each
weight many times; a small batch's step is bound by reading the weights instead.

It is only as fast as the kernel OpenBLAS runs, so the report names it (:func:`blas`). OpenBLAS picks the
kernel for the CPU at start-up unless ``OPENBLAS_CORETYPE`` names one: some machines set it to an older
kernel to work around bugs in old OpenBLAS builds, and on a 2-core Zen 5 ``OPENBLAS_CORETYPE=Haswell``
(256-bit vectors) took 2,048² products at ~230 GFLOP/s where OpenBLAS's own choice there, ``SkylakeX``
(AVX-512), took them at ~400: a limit half as fast as the machine. Run the benchmark without it
(``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE rnnstream bench engine``) where your NumPy is recent.

>>> import rnnstream
>>> step_flops(rnnstream.load(rnnstream.demo.SEED_MODEL))  # 2 x (104·400 + 300·800 + 200·1)
563600
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

from rnnstream.layers.dense import Dense
from rnnstream.layers.recurrent import Recurrent
from rnnstream.model import StreamModel

PRODUCT_SIZE = 2048
"""The side of the square float32 matrices whose product sets the rate (NumPy's ``a @ a``)."""
PRODUCT_FLOPS = 2 * PRODUCT_SIZE**3


def environment(threads: int) -> dict[str, str]:
    """What the product's process starts with: OpenBLAS (and OpenMP, MKL) on ``threads`` threads, its idle
    threads asleep after 2^4 cycles instead of spinning ~0.1 s into the next engine's round."""
    return {"OPENBLAS_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
            "OPENBLAS_THREAD_TIMEOUT": "4"}  # fmt: skip


def product() -> Callable[[object], object]:
    """A call of one product (its argument ignored), the matrices made and the product run once already."""
    a = np.random.default_rng(0).random((PRODUCT_SIZE, PRODUCT_SIZE), np.float32)
    _ = a @ a
    return lambda _: a @ a


def blas() -> str:
    """Which BLAS library, kernel and threads this process's NumPy products run on (threadpoolctl's view), and
    the ``OPENBLAS_CORETYPE`` that chose the kernel, if one did.

    >>> "BLAS" in blas() or "kernel" in blas()
    True
    """
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "NumPy's BLAS (its kernel unknown: pip install threadpoolctl)"
    libraries = [info for info in threadpool_info() if info.get("user_api") == "blas"]
    if not libraries:
        return "NumPy's BLAS (threadpoolctl found none loaded)"
    info = next((i for i in libraries if "numpy" in i.get("filepath", "")), libraries[0])
    name = {"openblas": "OpenBLAS", "mkl": "MKL", "blis": "BLIS"}.get(info["internal_api"], info["internal_api"])
    kernel = info.get("architecture") or ""
    text = f"{name} {info.get('version') or ''}".rstrip() + (f", its {kernel} kernel" if kernel else "")
    text += f", {info['num_threads']} thread" + ("s" if info["num_threads"] != 1 else "")
    forced = os.environ.get("OPENBLAS_CORETYPE") if name == "OpenBLAS" else None
    if not forced:
        return text
    chosen = forced.lower() == kernel.lower()
    return text + (f" (chosen by OPENBLAS_CORETYPE={forced})" if chosen else f" (OPENBLAS_CORETYPE={forced} not taken)")


def seconds(step_flops: int, batch: int, product_seconds: float) -> float:
    """The arithmetic limit of a ``batch``-row step, at the rate of a product that took ``product_seconds``.

    >>> round(seconds(563600, 256, 0.0830) * 1e6)  # the seed model's 256 rows at 207 GFLOP/s, in µs
    697
    """
    return batch * step_flops * product_seconds / PRODUCT_FLOPS


def step_flops(model: StreamModel) -> int:
    """Floating-point operations of one stream's step in its matrix products (2 per multiply-add), over
    the Dense and recurrent layers' weight matrices."""
    total = 0
    for node in model.graph.nodes:
        layer = node.layer
        if isinstance(layer, Dense | Recurrent):
            total += sum(value.size for name, value in layer.params().items() if name in ("W", "Wx", "Wh"))
    return 2 * total
