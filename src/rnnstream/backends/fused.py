"""The fused backend: one compiled call per Dense / SimpleRNN / LSTM / GRU node, everything else NumPy.

Each supported node is one pass of the kernel in ``_fused.c``: the matrix product of the row
``[x, h]`` with the layer's packed weights (``packing.py``) and the gate math applied to the
accumulators while they are still in registers, written straight into the new state row. No
concatenation, no per-gate temporaries, the GIL released, the work split over OpenMP threads.
Other layers (and activations the kernel does not know) run their NumPy step, as in the oracle.

>>> import numpy as np, rnnstream
>>> from rnnstream.backends.fused import FusedBackend, available
>>> m = rnnstream.load(rnnstream.demo.SEED_MODEL, backend="numpy")
>>> if available():
...     fused = FusedBackend(m.graph)
...     y_fused, _ = fused.step([np.ones((3, 4), np.float32)], np.zeros((3, m.state_size), np.float32))
...     y_numpy, _ = m.backend.step([np.ones((3, 4), np.float32)], np.zeros((3, m.state_size), np.float32))
...     assert np.allclose(y_fused[0], y_numpy[0], atol=1e-5)
"""

from __future__ import annotations

import os
from types import ModuleType

import numpy as np

from rnnstream.backends import packing
from rnnstream.backends.numpy import NumpyBackend
from rnnstream.errors import MissingDependencyError
from rnnstream.graph import Graph, Node
from rnnstream.layers.base import StepResult
from rnnstream.layers.dense import Dense
from rnnstream.layers.recurrent import GRU, LSTM, Recurrent, SimpleRNN
from rnnstream.types import Array, BoolArray, FloatArray

try:
    from rnnstream.backends import _fused as _kernel  # type: ignore[attr-defined]
except ImportError:  # built without a C compiler: the NumPy backend serves instead
    _kernel = None

PARALLEL_MIN_FLOPS = 300_000
"""Below this many FLOPs a node runs on one thread: waking the other costs more than it saves."""


def available() -> bool:
    """Whether the compiled kernel was built (``pip install`` compiles it when a C compiler exists)."""
    return _kernel is not None


def instruction_set() -> str:
    """The vector instructions the kernel uses on this CPU: ``avx512``, ``avx2`` or ``portable``."""
    return str(_require().isa()[0])


def _require() -> ModuleType:
    kernel: ModuleType | None = _kernel
    if kernel is None:
        raise MissingDependencyError(
            "the fused backend's compiled kernel is not built (no C compiler when rnnstream was installed); "
            "install gcc and reinstall rnnstream, or use backend='numpy'"
        )
    return kernel


class FusedBackend(NumpyBackend):
    """Steps Dense, SimpleRNN, LSTM and reset-after GRU nodes with the fused kernel; ``threads``
    defaults to every core (``RNNSTREAM_THREADS`` overrides)."""

    name = "fused"

    def __init__(self, graph: Graph, *, threads: int | None = None) -> None:
        super().__init__(graph)
        kernel = _require()
        self._kernel = kernel
        self.lanes: int = kernel.isa()[1]
        env_threads = os.environ.get("RNNSTREAM_THREADS")
        default = int(env_threads) if env_threads else int(kernel.cpu_count())
        self.threads = max(1, threads if threads is not None else default)
        # node index → (packed weights, layer, FLOPs per batch row)
        self._packed: dict[int, tuple[packing.Packed, Recurrent | Dense, int]] = {}
        for index, node in enumerate(graph.nodes):
            packed = self._pack(node)
            if packed is not None:
                assert isinstance(node.layer, Recurrent | Dense)
                self._packed[index] = (packed, node.layer, 2 * packed.weights.size)
        self._index = {id(node): index for index, node in enumerate(graph.nodes)}

    @property
    def fused_nodes(self) -> list[str]:
        """Names of the nodes the kernel steps (the rest run in NumPy)."""
        return [self.graph.nodes[i].name for i in sorted(self._packed)]

    def _pack(self, node: Node) -> packing.Packed | None:
        layer, lanes = node.layer, self.lanes
        if isinstance(layer, LSTM):
            if layer.activation_name == "tanh" and layer.recurrent_activation_name == "sigmoid":
                return packing.pack_lstm(layer.Wx, layer.Wh, layer.b, lanes=lanes)
        elif isinstance(layer, GRU):
            plain = layer.activation_name == "tanh" and layer.recurrent_activation_name == "sigmoid"
            if plain and layer.bh is not None:
                return packing.pack_gru(layer.Wx, layer.Wh, layer.bx, layer.bh, lanes=lanes)
        elif isinstance(layer, SimpleRNN):
            if layer.activation_name in packing.ACTIVATIONS:
                return packing.pack_act(layer.Wx, layer.b, Wh=layer.Wh, activation=layer.activation_name, lanes=lanes)
        elif isinstance(layer, Dense) and len(self.graph.specs[node.inputs[0]].shape) == 1:
            activation = layer.activation_name if layer.activation_name in packing.ACTIVATIONS else "linear"
            return packing.pack_act(layer.W, layer.b, activation=activation, lanes=lanes)
        return None

    def step_node(
        self, node: Node, inputs: list[Array], mask: BoolArray | None, state: FloatArray, new_state: FloatArray
    ) -> StepResult:
        found = self._packed.get(self._index[id(node)])
        if found is None:
            return node.layer.step(inputs, mask, state[:, node.start : node.stop])
        packed, layer, row_flops = found
        x = _rows(inputs[0])
        batch = x.shape[0]
        threads = self.threads if batch * row_flops >= PARALLEL_MIN_FLOPS else 1
        if isinstance(layer, Dense):
            y = np.empty((batch, packed.units), np.float32)
            self._call(packed, x, None, None, y, None, threads)
            if packing.ACTIVATIONS.get(layer.activation_name) is None:
                y = layer.act(y)
            return StepResult([y], layer.output_mask(inputs, mask), state[:, node.start : node.start])
        old = state[:, node.start : node.stop]
        rows = new_state[:, node.start : node.stop]
        H = packed.units
        if isinstance(layer, LSTM):
            self._call(packed, x, old[:, :H], old[:, H:], rows[:, :H], rows[:, H:], threads)
        else:
            self._call(packed, x, old, None, rows, None, threads)
        return layer.finish(rows, mask, old)

    def _call(
        self,
        packed: packing.Packed,
        x: FloatArray,
        h: FloatArray | None,
        c: FloatArray | None,
        out: FloatArray,
        out_c: FloatArray | None,
        threads: int,
    ) -> None:
        self._kernel.step(
            packed.epilogue,
            packed.activation,
            packed.weights,
            packed.bias,
            packed.panels,
            packed.k_x,
            packed.k_h,
            packed.units,
            x,
            h,
            c,
            out,
            out_c,
            threads,
        )


def _rows(a: Array) -> FloatArray:
    """``a`` as float32 ``(B, F)`` with contiguous rows, copied only when it is not already."""
    if a.dtype == np.float32 and a.ndim == 2 and a.strides[1] == 4:
        return a
    return np.ascontiguousarray(a, dtype=np.float32).reshape(a.shape[0], -1)
