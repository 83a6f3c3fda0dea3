"""The step of one batch size over fixed device buffers; on a CUDA device, captured once as a CUDA graph.

A :class:`FixedStep` owns, for batch ``B``, one device buffer per model input, the state buffer
``[B, S]`` and the step body: run the program on those buffers and copy the new state into the state
buffer, in place. On the CPU (or with capture off) each call runs the body eagerly. On CUDA the body
is captured once into a ``torch.cuda.CUDAGraph`` after a few warm-up runs on a side stream (the
pattern of PyTorch's CUDA-graph notes), and each call is: copy the inputs into pinned host buffers,
upload them asynchronously into the static input buffers, replay the graph, download the outputs
into pinned host buffers, synchronise once. The state never leaves the device.

Only the lines under ``if self._graph`` / ``_capture`` / pinned staging are CUDA-specific; the body
they capture is the one the CPU runs, and the tests check it there.

>>> import numpy as np, rnnstream, torch
>>> from rnnstream.backends.torch import TorchProgram
>>> model = rnnstream.load(rnnstream.demo.SEED_MODEL)
>>> fixed = FixedStep(TorchProgram(model.graph, torch.device("cpu")), batch=2, capture=False)
>>> with torch.inference_mode():
...     (y,) = fixed([np.ones((2, 4), np.float32)])
>>> y.shape, fixed.state.shape
((2, 1), torch.Size([2, 600]))
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from rnnstream.graph import Graph
from rnnstream.types import Array


class TorchProgram(Protocol):
    """What a FixedStep runs: a graph's step as torch operations on one device
    (:class:`rnnstream.backends.torch.TorchProgram`)."""

    graph: Graph
    device: torch.device

    def run(self, xs: list[Tensor], state: Tensor) -> tuple[list[Tensor], Tensor]: ...

WARMUP_RUNS = 3
"""Eager runs on a side stream before capture (lets cuBLAS and the caching allocator settle)."""

DTYPES = {"float32": torch.float32, "int64": torch.int64, "bool": torch.bool}
"""Torch dtype of each TensorSpec dtype."""


class FixedStep:
    """The step for exactly ``batch`` streams, reading and writing the same buffers every call."""

    def __init__(self, program: TorchProgram, batch: int, *, capture: bool) -> None:
        graph, device = program.graph, program.device
        self.program = program
        self.batch = batch
        self.xs = [torch.zeros((batch, *s.spec.shape), dtype=DTYPES[s.spec.dtype], device=device)
                   for s in graph.inputs]  # fmt: skip
        self.state = torch.zeros((batch, graph.state_size), dtype=torch.float32, device=device)
        self._cuda = device.type == "cuda"
        # Host side of the inputs and outputs: pinned (page-locked) memory on CUDA, so the copies are
        # asynchronous DMA; on the CPU the inputs are written straight into the device buffers.
        self._x_host = [torch.empty_like(x, device="cpu").pin_memory() for x in self.xs] if self._cuda else self.xs
        out_specs = [graph.specs[t] for t in graph.outputs]
        self._y_host = [torch.empty((batch, *s.shape), dtype=DTYPES[s.dtype]).pin_memory() for s in out_specs
                        ] if self._cuda else []  # fmt: skip
        self._graph: torch.cuda.CUDAGraph | None = None
        self._ys: list[Tensor] = []
        if capture:
            self._capture()

    @property
    def captured(self) -> bool:
        """Whether a call replays a CUDA graph (else it runs the body eagerly)."""
        return self._graph is not None

    def body(self) -> list[Tensor]:
        """One step on the fixed buffers: outputs, and the new state written over the old, in place."""
        ys, new_state = self.program.run(self.xs, self.state)
        self.state.copy_(new_state)
        return ys

    def __call__(self, xs: list[Array]) -> list[Array]:
        """Upload ``xs`` (validated host arrays ``[B, ...]``), step, return the outputs as host arrays."""
        for host, buffer, x in zip(self._x_host, self.xs, xs, strict=True):
            host.numpy()[...] = x
            if host is not buffer:
                buffer.copy_(host, non_blocking=True)
        if self._graph is None:
            ys = self.body()
            if not self._cuda:
                return [y.numpy().copy() for y in ys]
        else:
            with torch.cuda.device(self.state.device):
                self._graph.replay()
            ys = self._ys
        for host, y in zip(self._y_host, ys, strict=True):
            host.copy_(y, non_blocking=True)
        torch.cuda.current_stream(self.state.device).synchronize()
        return [host.numpy().copy() for host in self._y_host]

    def _capture(self) -> None:
        """Capture :meth:`body` as a CUDA graph. Warm-up runs scribble on the state buffer: the caller
        loads the real state afterwards."""
        device = self.state.device
        with torch.cuda.device(device):  # capture records the current device's work: make it ours
            side = torch.cuda.Stream(device)  # type: ignore[no-untyped-call]
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):
                for _ in range(WARMUP_RUNS):
                    self.body()
            torch.cuda.current_stream(device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self._ys = self.body()
        self._graph = graph


def upload(a: Array, device: torch.device) -> Tensor:
    """A host array as a new tensor on ``device`` (always a copy: the caller's array is never shared)."""
    return torch.from_numpy(np.array(a, order="C")).to(device)
