"""The fused backend: one compiled call per Dense / SimpleRNN / LSTM / GRU node, everything else NumPy.

Each supported node is one pass of the kernel in ``_fused.c``: the matrix product of the row
``[x, h]`` with the layer's packed weights (``packing.py``) and the gate math applied to the
accumulators while they are still in registers (small batches) or in an L1-sized buffer (batches of
6 rows and more, whose rows the kernel copies into cache-sized tiles first, in a buffer each calling
thread keeps for its next step), written straight into the new state row. No per-gate temporaries,
the GIL released, the work shared with helper threads (``work_pool.h``).
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
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from rnnstream.backends import packing
from rnnstream.backends.fused_wiring import Wiring, columns, rows, wire
from rnnstream.backends.numpy import NumpyBackend
from rnnstream.errors import InputError, MissingDependencyError
from rnnstream.graph import Graph, Node
from rnnstream.layers.dense import Dense, Embedding
from rnnstream.layers.layer import StatelessLayer, StepResult
from rnnstream.layers.recurrent import GRU, LSTM, Recurrent, SimpleRNN
from rnnstream.types import Array, BoolArray, FloatArray

KERNEL: ModuleType | None
"""The compiled kernel (``_fused.c``), or None where rnnstream was built without a C compiler."""
try:
    from rnnstream.backends import _fused

    KERNEL = _fused
except ImportError:  # built without a C compiler: the NumPy backend serves instead
    KERNEL = None


def available() -> bool:
    """Whether the compiled kernel was built (``pip install`` compiles it when a C compiler exists)."""
    return KERNEL is not None


def instruction_set() -> str:
    """The vector instructions the kernel uses on this CPU: ``avx512``, ``avx2`` or ``portable``."""
    return str(_require().isa()[0])


def bf16_dot() -> bool:
    """Whether the kernel computes ``bf16-dot`` (bfloat16 weights times bfloat16 rows, ``vdpbf16ps``) on this
    CPU: one with AVX512_BF16, unless ``RNNSTREAM_KERNEL_ISA`` asks for a narrower instruction set."""
    return bool(_require().bf16_dot())


def bf16_amx() -> bool:
    """Whether ``bf16-dot`` steps batches of 8 rows and more on AMX tiles (``amx_kernel.h``): a CPU with
    AMX-BF16 (Intel Sapphire Rapids and later) whose OS grants it, unless ``RNNSTREAM_AMX=0``."""
    return bool(_require().bf16_amx())


def bf16_dot_fast() -> bool:
    """Whether ``bf16-dot`` steps faster than ``bf16-widen`` here, so that ``bf16`` means it: where AMX runs
    it (:func:`bf16_amx`), or on an AMD CPU with AVX512_BF16 (Zen 4 and later), whose ``vdpbf16ps`` does twice
    an FMA's products (on a Sapphire Rapids Xeon it does not)."""
    return bool(_require().bf16_dot_fast())


def int8() -> bool:
    """Whether the kernel computes ``int8`` (int8 weights times 8-bit rows, summed exactly in int32) on this CPU:
    with AVX512_VNNI's ``vpdpbusd`` (Intel Cascade Lake and later, AMD Zen 4 and later) where the kernel runs
    AVX-512, with AVX2's ``vpmaddubsw`` where it runs AVX2 (AMD Zen 1 to 3, Intel Haswell and later); not on the
    portable build, nor on AVX-512 CPUs without VNNI (Intel Skylake-SP) unless ``RNNSTREAM_KERNEL_ISA=avx2``."""
    return bool(_require().int8())


SPIN_US_DEFAULT = 150
"""How long (µs) idle helper threads poll for the next task before they sleep, unless told otherwise."""
SPIN_US_MAX = 1_000_000
"""The longest :func:`helper_spin` (and ``RNNSTREAM_SPIN_US``) may set: one second."""
_spin_environment_read = False


def helper_spin(microseconds: int | None = None) -> int:
    """How long (µs) the kernel's idle helper threads poll for the next task before they sleep (default
    :data:`SPIN_US_DEFAULT`; ``RNNSTREAM_SPIN_US``, read when the first fused backend is made); with
    ``microseconds``, set it first.

    A helper that has gone to sleep is left asleep for small tasks (waking one costs more than it saves), so a
    stream stepped more than three quarters of the spin apart (112 µs by default) gets one core's speed. A
    longer spin keeps the helper for it, its core busy the while (seed model, batch 1, a 2-core Zen 5, a 0.1 ms
    sleep before each step: 6.8-10.6 µs a step with 1,000 µs, 13.1-13.6 by default). 0: helpers sleep at once.

    >>> from rnnstream.backends import fused
    >>> if fused.available():
    ...     before = fused.helper_spin()
    ...     assert fused.helper_spin(400) == 400
    ...     _ = fused.helper_spin(before)
    """
    if microseconds is not None and (
        isinstance(microseconds, bool) or not isinstance(microseconds, int) or not 0 <= microseconds <= SPIN_US_MAX
    ):
        raise InputError(f"helper spin {microseconds!r} µs: give whole microseconds, 0 to {SPIN_US_MAX:,}")
    return int(_require().spin_us(-1 if microseconds is None else microseconds))


def _spin_from_environment() -> None:
    """Apply ``RNNSTREAM_SPIN_US`` once per process (:func:`helper_spin` changes it after); a bad value is refused
    each time a fused backend is made."""
    global _spin_environment_read
    value = os.environ.get("RNNSTREAM_SPIN_US", "")
    if _spin_environment_read or not value:
        return
    microseconds = int(value) if value.isascii() and value.isdigit() else -1
    if not 0 <= microseconds <= SPIN_US_MAX:
        raise InputError(f"RNNSTREAM_SPIN_US={value!r}: give whole microseconds, 0 to {SPIN_US_MAX:,}")
    helper_spin(microseconds)
    _spin_environment_read = True


def _require() -> ModuleType:
    kernel = KERNEL
    if kernel is None:
        raise MissingDependencyError(
            "the fused backend's compiled kernel is not built (no C compiler when rnnstream was installed); "
            "install gcc and reinstall rnnstream, or use backend='numpy'"
        )
    return kernel


class FusedBackend(NumpyBackend):
    """Steps Dense, SimpleRNN, LSTM and reset-after GRU nodes with the fused kernel; ``threads``
    defaults to every core (``RNNSTREAM_THREADS`` overrides). Recurrent layers with variants the
    kernel does not compute (``layer.plain`` is False: clip, peepholes, projection, ...) run their
    NumPy step.

    A graph in which no mask can arise (the usual case) runs a precompiled list of node calls; one
    with masks walks the graph like the oracle, node by node.
    """

    name = "fused"

    def __init__(self, graph: Graph, *, threads: int | None = None, precision: str = "fp32") -> None:
        super().__init__(graph)
        # fp32, bf16-widen, bf16-dot or int8 (rnnstream.precision): the graph's weights are already at it
        self.precision = precision
        self.bf16 = precision.startswith("bf16")  # the kernel keeps the weight matrices as bfloat16
        kernel = _require()
        _spin_from_environment()
        self._kernel = kernel
        self.lanes: int = kernel.isa()[1]
        env_threads = os.environ.get("RNNSTREAM_THREADS")
        default = int(env_threads) if env_threads else int(kernel.cpu_count())
        self.threads = max(1, threads if threads is not None else default)
        mask_free = _mask_free(graph)
        # Without masks a fused recurrent node's output is its new h, so the next node reads those
        # columns of the new state in place: tensor id → first column.
        self._in_state: dict[int, int] = {}
        self._plans: dict[int, tuple[object, Recurrent | Dense]] = {}
        for node in graph.nodes:
            packed = self._pack(node)
            if packed is None or (precision == "int8" and max(packed.k_x, packed.k_h) > packing.INT8_MAX_INPUTS):
                continue  # the kernel does not step it (int8: its sums would overflow int32): NumPy does
            assert isinstance(node.layer, Recurrent | Dense)
            x_col = self._in_state.get(node.inputs[0], -1)
            weights, quant = self._weights(packed)
            plan = kernel.make_plan(
                packed.epilogue, packed.activation, weights, packed.bias, packed.panels,
                packed.k_x, packed.k_h, packed.units, node.start, x_col, precision == "bf16-dot", quant,
            )  # fmt: skip
            self._plans[id(node)] = (plan, node.layer)
            if mask_free and isinstance(node.layer, Recurrent):
                self._in_state[node.outputs[0]] = node.start
        self._program = _compile(self) if mask_free else None
        # every node the kernel's: the whole step in one C call (None: node by node)
        self.wiring = wire(graph, self._plans, self._in_state) if mask_free else None
        self._wired = _wired_step(kernel, self.wiring)

    def _weights(self, packed: packing.Packed) -> tuple[Array, Array | None]:
        """``packed``'s weights as the kernel takes them at this backend's precision, and (int8) their
        columns' scales and sums."""
        if self.precision == "int8":
            return packing.int8_quads(packed.weights, packed.k_x, packed.k_h, self.lanes)
        if self.precision == "bf16-dot":
            return packing.bf16_dot_pairs(packed.weights, packed.k_x, packed.k_h, self.lanes), None
        return (packing.bf16_pairs(packed.weights, self.lanes) if self.bf16 else packed.weights), None

    @property
    def can_launch(self) -> bool:
        """Whether :meth:`launch` can run this graph's step: every node is one the kernel steps."""
        return self.wiring is not None and hasattr(self._kernel, "launch")  # no launcher without POSIX threads

    def launch(self, xs: list[Array], state: FloatArray, fd: int, threads: int | None = None) -> Launched:
        """Start one step on the kernel's runner thread and return at once (``launcher.h``); 8 bytes are
        written to ``fd`` when it is done; ``threads`` (at most ``self.threads``) share its work. Needs
        :attr:`can_launch`."""
        if self.wiring is None or not self.can_launch:
            raise RuntimeError("this graph has nodes the kernel does not step; call step() instead")
        new_state = np.empty_like(state)
        items, outputs = self.wiring.items(xs, new_state)
        share = self.threads if threads is None else max(1, min(threads, self.threads))
        handle = self._kernel.launch(list(items), state, new_state, share, fd)
        return Launched(handle, self._kernel, outputs, new_state)

    def bind(self, xs: list[FloatArray], state: FloatArray, new_state: FloatArray) -> Bound | None:
        """The whole step from ``state`` into ``new_state`` over the input buffers ``xs``, checked once
        (``_fused.bind``); None when a node is not the kernel's (see :attr:`can_launch`)."""
        if self.wiring is None:
            return None
        if any(x.dtype != np.float32 or not x.flags.c_contiguous for x in xs):
            raise ValueError("bind(): input buffers must be contiguous float32 arrays (the kernel reads them in place)")
        items, outputs = self.wiring.items(list(xs), new_state)
        return Bound(self._kernel.bind(items, state, new_state, self.threads), self._kernel, outputs)

    @property
    def fused_nodes(self) -> list[str]:
        """Names of the nodes the kernel steps (the rest run in NumPy)."""
        return [node.name for node in self.graph.nodes if id(node) in self._plans]

    def _pack(self, node: Node) -> packing.Packed | None:
        layer, lanes = node.layer, self.lanes
        if isinstance(layer, Recurrent) and not layer.plain:
            return None  # clip, peepholes, projection, ...: the kernel computes the Keras cell only
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

    def step(self, xs: list[Array], state: FloatArray) -> tuple[list[FloatArray], FloatArray]:
        if self._wired is not None:  # every node the kernel's: the step, its new arrays and all, in one C call
            stepped: tuple[list[FloatArray], FloatArray] | None = self._kernel.step_wired(
                self._wired, xs, state, self.threads
            )
            if stepped is not None:  # None: an input it does not take as it is (not float32 rows)
                return stepped
        if self.wiring is not None:
            new_state = np.empty_like(state)
            items, outputs = self.wiring.items(xs, new_state)
            self._kernel.step_all(items, state, new_state, self.threads)
            return outputs, new_state
        if self._program is None:
            return super().step(xs, state)
        values: list[Any] = [None] * len(self.graph.specs)
        for spec, x in zip(self.graph.inputs, xs, strict=True):
            values[spec.tensor] = x
        new_state = np.empty_like(state)
        for op in self._program:
            op(values, state, new_state)
        return [values[t] for t in self.graph.outputs], new_state

    def step_node(
        self, node: Node, inputs: list[Array], mask: BoolArray | None, state: FloatArray, new_state: FloatArray
    ) -> StepResult:
        """The general path (graphs with masks): one node, masks applied after the kernel."""
        found = self._plans.get(id(node))
        if found is None:
            return node.layer.step(inputs, mask, state[:, node.start : node.stop])
        plan, layer = found
        if isinstance(layer, Dense):
            y = self._dense(plan, layer, rows(inputs[0]), state, new_state)
            return StepResult([y], layer.output_mask(inputs, mask), state[:, node.start : node.start])
        x = None if node.inputs[0] in self._in_state else rows(inputs[0])
        self._kernel.step(plan, x, state, new_state, None, self.threads)
        return layer.finish(new_state[:, node.start : node.stop], mask, state[:, node.start : node.stop])

    def _dense(self, plan: object, layer: Dense, x: FloatArray | None, state: FloatArray, new_state: FloatArray) -> Any:
        y = np.empty((state.shape[0], layer.W.shape[1]), np.float32)
        self._kernel.step(plan, x, state, new_state, y, self.threads)
        return y if packing.ACTIVATIONS.get(layer.activation_name) is not None else layer.act(y)


@dataclass
class Launched:
    """A step running on the kernel's runner thread: ``outputs`` and ``new_state`` are filled once
    :meth:`done` is True (the arrays are kept alive until then, whatever the caller drops)."""

    handle: object
    kernel: ModuleType
    outputs: list[FloatArray]
    new_state: FloatArray

    def done(self) -> bool:
        """True once the step has run; raises MemoryError if the runner could not get its buffers, and
        RuntimeError in a child process forked before the step ran."""
        return bool(self.kernel.done(self.handle))


@dataclass
class Bound:
    """A step bound to its arrays by :meth:`FusedBackend.bind`: ``run()`` steps in place and leaves the
    graph's outputs in ``outputs``."""

    handle: object
    kernel: ModuleType
    outputs: list[FloatArray]

    def run(self) -> None:
        self.kernel.run(self.handle)

    def run_from(self, x: object, buffer: FloatArray) -> bool:
        """Copy ``x`` into the bound input array ``buffer`` and step, in one C call, when ``x`` is a
        C-contiguous float32 array of its shape; else False, nothing done."""
        return bool(self.kernel.run_from(self.handle, x, buffer))


def _wired_step(kernel: ModuleType, wiring: Wiring | None) -> object | None:
    """The kernel's handle of ``wiring`` for ``step_wired``; None without one, or for a graph larger than a
    step it holds (64 inputs, nodes and outputs: ``whole_step.h``), which steps through ``Wiring.items``."""
    if wiring is None:
        return None
    try:
        handle: object = kernel.wire(*wiring.for_kernel())
    except ValueError:
        return None
    return handle


Op = Callable[[list[Any], FloatArray, FloatArray], None]


def _compile(backend: FusedBackend) -> list[Op]:
    """One closure per node, with every index and slice bound in advance (graphs without masks)."""
    program: list[Op] = []
    for node in backend.graph.nodes:
        found = backend._plans.get(id(node))
        if found is None:
            program.append(_numpy_op(node))
        elif isinstance(found[1], Dense):
            program.append(_dense_op(backend, node, found[0], found[1]))
        else:
            program.append(_recurrent_op(backend, node, found[0], found[1]))
    return program


def _numpy_op(node: Node) -> Op:
    def op(values: list[Any], state: FloatArray, new_state: FloatArray) -> None:
        result = node.layer.step([values[t] for t in node.inputs], None, state[:, node.start : node.stop])
        if node.stop > node.start:
            new_state[:, node.start : node.stop] = result.state
        for tensor, value in zip(node.outputs, result.outputs, strict=True):
            values[tensor] = value

    return op


def _dense_op(backend: FusedBackend, node: Node, plan: object, dense: Dense) -> Op:
    x_id, y_id = node.inputs[0], node.outputs[0]
    reads_state = x_id in backend._in_state

    def op(values: list[Any], state: FloatArray, new_state: FloatArray) -> None:
        values[y_id] = backend._dense(plan, dense, None if reads_state else rows(values[x_id]), state, new_state)

    return op


def _recurrent_op(backend: FusedBackend, node: Node, plan: object, layer: Recurrent) -> Op:
    kernel, threads, x_id = backend._kernel, backend.threads, node.inputs[0]
    reads_state = x_id in backend._in_state
    outputs = columns(node, layer.units)

    def op(values: list[Any], state: FloatArray, new_state: FloatArray) -> None:
        kernel.step(plan, None if reads_state else rows(values[x_id]), state, new_state, None, threads)
        for tensor, lo, hi in outputs:
            values[tensor] = new_state[:, lo:hi]

    return op


def _mask_free(graph: Graph) -> bool:
    """True when no step of this graph can carry a mask: no Masking, no ``Embedding(mask_zero=True)``,
    no mask-producing op, no mask passed explicitly."""
    for node in graph.nodes:
        layer = node.layer
        if node.mask >= 0 or getattr(layer, "mask_zero", False):
            return False
        if isinstance(layer, StatelessLayer) and not isinstance(layer, Embedding):
            makes_masks = type(layer).output_mask is not StatelessLayer.output_mask
            if makes_masks:
                return False
    return True
