"""Backends execute a StreamModel's step: ``numpy`` (the oracle), ``fused`` (the compiled CPU kernel),
``torch`` (PyTorch on a CPU or CUDA ``device``; needs torch, imported only when asked for).

``auto`` picks ``fused`` when its kernel is built, else ``numpy``; the environment variable
``RNNSTREAM_BACKEND`` overrides what ``auto`` picks. ``precision`` (:mod:`rnnstream.precision`) is
``fp32`` or a bf16 mode: every backend computes bf16 on weights rounded to bfloat16; the fused kernel also
keeps them in 16 bits. ``bf16`` is the faster mode the backend computes here (:func:`concrete_precision`).
``int8``: the fused kernel where the CPU has AVX512_VNNI or AVX2, and the NumPy backend (emulated); not torch.

>>> import rnnstream
>>> rnnstream.load(rnnstream.demo.SEED_MODEL, backend="numpy").backend.name
'numpy'
"""

from __future__ import annotations

import os

from rnnstream.backends.backend import Backend, BoundStep, LaunchedStep
from rnnstream.backends.fused import FusedBackend, available, bf16_dot, bf16_dot_fast, instruction_set, int8
from rnnstream.backends.numpy import NumpyBackend
from rnnstream.errors import InputError
from rnnstream.graph import Graph
from rnnstream.precision import at_precision, check_precision

__all__ = ["BACKENDS", "Backend", "BoundStep", "LaunchedStep", "concrete_precision", "make_backend"]

BACKENDS = ("auto", "numpy", "fused", "torch")


def make_backend(
    name: str, graph: Graph, *, threads: int | None = None, device: str | None = None, precision: str = "fp32"
) -> Backend:
    """The backend called ``name`` (one of ``BACKENDS``) for ``graph`` with its weights at ``precision``;
    ``device`` is the torch backend's (``"cpu"``, ``"cuda"``, ``"cuda:1"``; default ``cuda`` when torch
    sees a GPU, else ``cpu``)."""
    if name == "auto":
        name = os.environ.get("RNNSTREAM_BACKEND") or ("fused" if available() else "numpy")
    precision = concrete_precision(precision, name)
    graph = at_precision(graph, precision)
    if name == "torch":
        from rnnstream.backends.torch import TorchBackend

        return TorchBackend(graph, device=device, threads=threads)
    if device is not None and device != "cpu":
        raise InputError(f"device {device!r} applies to backend 'torch' only; backend {name!r} runs on the CPU")
    if name == "numpy":
        return NumpyBackend(graph)
    if name == "fused":
        return FusedBackend(graph, threads=threads, precision=precision)
    raise InputError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")


BF16_ENV = "RNNSTREAM_BF16"
"""``widen`` or ``dot``: what ``bf16`` means (``dot`` only where the CPU has AVX512_BF16); unset, the faster."""


def concrete_precision(precision: str, backend: str) -> str:
    """The mode backend ``backend`` computes ``precision`` in: ``bf16`` becomes ``bf16-dot`` for the fused
    kernel where it is the faster (:func:`rnnstream.backends.fused.bf16_dot_fast`: AMX, 1.5-3.5x faster than
    bf16-widen from batch 16 on a Sapphire Rapids Xeon; an AMD Zen 4's vdpbf16ps, 1.9x at batch 256), else
    ``bf16-widen``; ``RNNSTREAM_BF16=widen`` or ``dot`` decides instead. ``bf16-dot`` where it cannot run is an error.

    >>> concrete_precision("bf16-widen", "fused"), concrete_precision("bf16-dot", "numpy")
    ('bf16-widen', 'bf16-dot')
    """
    dot = backend == "fused" and available() and bf16_dot()
    if check_precision(precision) == "bf16":
        wanted = os.environ.get(BF16_ENV) or ("dot" if dot and bf16_dot_fast() else "widen")
        return "bf16-dot" if dot and wanted == "dot" else "bf16-widen"
    if precision == "int8":
        return _int8_on(backend)
    if precision == "bf16-dot" and backend == "torch":
        raise InputError("the torch backend does not compute bf16-dot (bfloat16 rows); use bf16 or bf16-widen")
    if precision == "bf16-dot" and backend == "fused" and available() and not dot:
        raise InputError(
            "bf16-dot needs AVX512_BF16, which this CPU lacks (or RNNSTREAM_KERNEL_ISA rules it out); "
            "use bf16 (the widening path here) or backend='numpy' to emulate it"
        )
    return precision


def _int8_on(backend: str) -> str:
    """``int8``, where ``backend`` computes it."""
    if backend == "torch":
        raise InputError("the torch backend does not compute int8; use backend='fused' (or 'numpy' to emulate it)")
    if backend == "fused" and available() and not int8():  # not built: FusedBackend says so
        if instruction_set() == "avx512":  # an AVX-512 CPU without VNNI (Intel Skylake-SP)
            raise InputError(
                "int8 needs AVX512_VNNI where the kernel runs AVX-512, which this CPU lacks; set "
                "RNNSTREAM_KERNEL_ISA=avx2 for the AVX2 kernel's int8, or use fp32 or bf16"
            )
        raise InputError(
            "int8 needs AVX2 or AVX512_VNNI, which this CPU lacks (or RNNSTREAM_KERNEL_ISA rules them out); "
            "use fp32, or backend='numpy' to emulate it"
        )
    return "int8"
