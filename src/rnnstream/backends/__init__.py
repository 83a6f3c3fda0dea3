"""Backends execute a StreamModel's step: ``numpy`` (the oracle), ``fused`` (the compiled CPU kernel),
``torch`` (PyTorch on a CPU or CUDA ``device``; needs torch, imported only when asked for).

``auto`` picks ``fused`` when its kernel is built, else ``numpy``; the environment variable
``RNNSTREAM_BACKEND`` overrides what ``auto`` picks. ``precision`` (:mod:`rnnstream.precision`) is
``fp32`` or ``bf16``: every backend computes bf16 on weights rounded to bfloat16; the fused kernel also
keeps them in 16 bits.

>>> import rnnstream
>>> rnnstream.load(rnnstream.demo.SEED_MODEL, backend="numpy").backend.name
'numpy'
"""

from __future__ import annotations

import os

from rnnstream.backends.backend import Backend, BoundStep, LaunchedStep
from rnnstream.backends.fused import FusedBackend, available
from rnnstream.backends.numpy import NumpyBackend
from rnnstream.errors import InputError
from rnnstream.graph import Graph
from rnnstream.precision import at_precision

__all__ = ["BACKENDS", "Backend", "BoundStep", "LaunchedStep", "make_backend"]

BACKENDS = ("auto", "numpy", "fused", "torch")


def make_backend(
    name: str, graph: Graph, *, threads: int | None = None, device: str | None = None, precision: str = "fp32"
) -> Backend:
    """The backend called ``name`` (one of ``BACKENDS``) for ``graph`` with its weights at ``precision``;
    ``device`` is the torch backend's (``"cpu"``, ``"cuda"``, ``"cuda:1"``; default ``cuda`` when torch
    sees a GPU, else ``cpu``)."""
    graph = at_precision(graph, precision)
    if name == "auto":
        name = os.environ.get("RNNSTREAM_BACKEND") or ("fused" if available() else "numpy")
    if name == "torch":
        from rnnstream.backends.torch import TorchBackend

        return TorchBackend(graph, device=device, threads=threads)
    if device is not None and device != "cpu":
        raise InputError(f"device {device!r} applies to backend 'torch' only; backend {name!r} runs on the CPU")
    if name == "numpy":
        return NumpyBackend(graph)
    if name == "fused":
        return FusedBackend(graph, threads=threads, bf16=precision == "bf16")
    raise InputError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
