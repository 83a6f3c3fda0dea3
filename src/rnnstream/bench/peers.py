"""The engines rnnstream is measured against, each built from the same weights and stepped the same way.

Every peer is a :class:`Peer`: ``make(batch)`` returns a zero-state step function ``x → y`` that
keeps its own state, so a benchmark can time steps and check outputs alike.

- ``onnxruntime``: the model's step exported with :meth:`StreamModel.export_onnx` (ONNX ``LSTM``
  operators over one step, each state part in and out), run by an ONNX Runtime session;
  ``onnxruntime-int8``: the same step quantized by ONNX Runtime's dynamic quantization
  (:func:`quantized_step_graph`).
- ``pytorch``: ``nn.LSTMCell`` / ``nn.Linear`` per layer with the same weights, in ``torch.no_grad``.
- ``keras-predict``: a ``stateful=True`` Keras model, ``model.predict`` once per step (what the seed
  blog does), and ``keras-call``: the same model called directly, ``model(x)``.
- ``rnnstream-device`` (optional): rnnstream's own :class:`~rnnstream.device_batch.DeviceBatch`, the
  state resident on a torch device (on CUDA, the step replayed as a CUDA graph).
- ``rnnstream-stepper``: :meth:`StreamModel.stepper`, the step bound to preallocated buffers;
  ``rnnstream-bf16`` / ``rnnstream-bf16-widen``: ``model.step`` with bfloat16 weights (precision ``bf16``:
  bf16-dot, the rows rounded too, where it is the faster: AMX or an AMD CPU's AVX512_BF16; or ``bf16-widen``
  everywhere); ``rnnstream-int8``: ``model.step`` at precision ``int8`` (the fused kernel's AVX512_VNNI or AVX2 path).
- ``rnnstream-beside-ort`` / ``rnnstream-beside-blas``: ``model.step`` in a process where, before each
  (untimed), ONNX Runtime steps the same model at the same batch, or NumPy multiplies two 256 × 256
  float32 matrices (OpenBLAS): their thread pools spin on the cores the kernel's helpers use (measured on
  a 2-core Zen 4: after each call ONNX Runtime's pool burns ~38 ms of CPU, OpenBLAS's ~98 ms, so every
  step of the kernel runs while one of them holds the second core);
  ``rnnstream-beside-ort-quiet`` / ``rnnstream-beside-blas-quiet``: the same neighbours told not to spin
  (ONNX Runtime's ``session.intra_op.allow_spinning`` 0; ``OPENBLAS_THREAD_TIMEOUT=4``, which
  :data:`QUIET_ENVIRONMENT` sets for that engine's process);
  ``rnnstream-beside-pause``: the control, no neighbour at all: the process sleeps :data:`PAUSE_SECONDS` before
  each step. What a step costs after its cores were left idle for a moment (caches cooled; on a VM, an idle
  core halts), which a quiet neighbour's step costs too, whatever its threads do;
  ``rnnstream-beside-evict``: the other control, no pause and no other thread: the calling thread reads
  :data:`EVICT_BYTES` of its own before each step, which leaves none of the model in its core's L1 and L2
  caches (the other core's keep theirs). The read outlasts the kernel's helpers' spin, so rnnstream's next step
  also finds them asleep, as after the pause; ONNX Runtime's pool spins on.
- ``onnxruntime-beside-blas`` / ``-blas-quiet`` / ``-pause`` / ``-evict``: ONNX Runtime's own step beside the
  same neighbours, against its own steps in the same process: what the neighbours cost a peer, in the same run.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rnnstream.errors import InputError, MissingDependencyError, UnsupportedLayerError
from rnnstream.layers.dense import Dense
from rnnstream.layers.recurrent import LSTM
from rnnstream.model import StreamModel
from rnnstream.types import FloatArray

StepFn = Callable[[FloatArray], Any]


@dataclass(frozen=True)
class Peer:
    name: str
    make: Callable[[int], StepFn]
    neighbour: Callable[[int], StepFn] | None = None
    """Work of another library run before each timed step (untimed), for that batch size."""


def rnnstream_peer(model: StreamModel, *, bound: bool = False) -> Peer:
    """``model.step`` from its own state; ``bound``: :meth:`StreamModel.stepper`."""

    def make(batch: int) -> StepFn:
        if bound:
            return model.stepper(batch_size=batch)
        state = model.initial_state(batch)

        def step(x: FloatArray) -> Any:
            nonlocal state
            y, state = model.step(x, state)
            return y

        return step

    kind = "stepper" if bound else model.backend.name + ("" if model.precision == "fp32" else f"-{model.precision}")
    return Peer(f"rnnstream-{kind}", make)


QUIET_ENVIRONMENT = {"OPENBLAS_THREAD_TIMEOUT": "4"}
"""What a ``-quiet`` neighbour's process starts with: OpenBLAS's idle threads wait 2^4 cycles, not 2^28,
before they sleep (it reads this when NumPy loads it)."""


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """``os.environ`` with ``values`` set, for a child process to start with; restored after."""
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


PAUSE_SECONDS = 1e-4
"""The ``pause`` neighbour's sleep: about ONNX Runtime's batch-1 step of the seed model (Linux adds its timer slack,
~50 µs)."""


EVICT_BYTES = 8 << 20
"""What the ``evict`` neighbour reads: four times the largest per-core L2 cache seen here (2 MiB)."""

BESIDE_SUBJECTS = ("rnnstream", "onnxruntime")
"""The engines that can be timed beside a neighbour: ``<subject>-beside-<neighbour>``."""
NEIGHBOURS = ("ort", "ort-quiet", "blas", "blas-quiet", "pause", "evict")


def beside_peer(model: StreamModel, subject: str, neighbour: str, threads: int) -> Peer:
    """``subject``'s step (``rnnstream``: ``model.step``; ``onnxruntime``: its session, spinning as by default) with
    another library's pool in the same process: ``ort`` or ``blas``, spinning as they do by default, or
    ``ort-quiet`` / ``blas-quiet``, told not to; or no pool: ``pause`` (a sleep) or ``evict`` (a read that
    cools the caches)."""
    if subject not in BESIDE_SUBJECTS:
        engines = ", ".join(BESIDE_SUBJECTS)
        raise InputError(f"unknown engine {subject!r} to time beside a neighbour; engines: {engines}")
    if neighbour in ("ort", "ort-quiet") and subject == "onnxruntime":
        raise InputError(f"onnxruntime beside {neighbour!r} would be ONNX Runtime beside itself; time it beside "
                         "blas, blas-quiet, pause or evict")  # fmt: skip
    if neighbour in ("ort", "ort-quiet"):
        make_neighbour = onnxruntime_peer(model, threads, spin=neighbour == "ort").make
    elif neighbour == "pause":

        def make_neighbour(batch: int) -> StepFn:
            return lambda x: time.sleep(PAUSE_SECONDS)

    elif neighbour == "evict":
        memory = np.ones(EVICT_BYTES // 4, np.float32)

        def make_neighbour(batch: int) -> StepFn:
            return lambda x: memory.sum()

    elif neighbour in ("blas", "blas-quiet"):
        a = np.random.default_rng(0).random((256, 256), np.float32)

        def make_neighbour(batch: int) -> StepFn:
            return lambda x: a @ a

    else:
        raise InputError(f"unknown neighbour {neighbour!r}; neighbours: {', '.join(NEIGHBOURS)}")
    subject_peer = rnnstream_peer(model) if subject == "rnnstream" else onnxruntime_peer(model, threads)
    return Peer(f"{subject}-beside-{neighbour}", subject_peer.make, make_neighbour)


def device_batch_peer(model: StreamModel, threads: int, device: str | None) -> Peer:
    """Steps a DeviceBatch on ``device`` (default: CUDA when torch sees a GPU, else the CPU)."""
    from rnnstream.backends.torch import resolve_device
    from rnnstream.device_batch import DeviceBatch

    where = resolve_device(device)
    model.set_backend("torch", threads=threads, device=str(where))  # every DeviceBatch shares its weights

    def make(batch: int) -> StepFn:
        return DeviceBatch(model, batch, device=where).step

    return Peer(f"rnnstream-device-{where.type}", make)


def onnxruntime_peer(model: StreamModel, threads: int, spin: bool = True, *, int8: bool = False) -> Peer:
    """ONNX Runtime's session over the model's step; ``spin``: its idle threads spin-wait (the default);
    ``int8``: the step quantized first (:func:`quantized_step_graph`), the session's settings the same."""
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise MissingDependencyError("pip install onnxruntime onnx") from e
    from rnnstream.onnx_export import build_step_graph

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # State parts as separate (1, B, units) tensors: the fewest operators, ONNX Runtime's best case.
    graph = build_step_graph(model, state="parts")
    serialized = quantized_step_graph(graph) if int8 else graph.SerializeToString()
    session = ort.InferenceSession(serialized, options, providers=["CPUExecutionProvider"])
    input_name = model.inputs[0].name
    parts = [(f"{p.layer}.{p.part}", p.stop - p.start) for p in model.state_layout]

    def make(batch: int) -> StepFn:
        state = {name: np.zeros((1, batch, size), np.float32) for name, size in parts}

        def step(x: FloatArray) -> Any:
            y, *new = session.run(None, {input_name: x, **state})
            state.update(zip((name for name, _ in parts), new, strict=True))
            return y

        return step

    return Peer("onnxruntime-int8" if int8 else "onnxruntime", make)


def quantized_step_graph(graph: Any) -> bytes:
    """The ONNX step model ``graph`` quantized by ``onnxruntime.quantization.quantize_dynamic``, serialized.

    Weights int8 (``QInt8``) with ``per_channel=True``: for ``LSTM`` (quantized to ``DynamicQuantizeLSTM``)
    ONNX Runtime then gives each of the 4·units rows of W and R its own scale — one per gate column, as
    rnnstream's int8 does — where without it W and R each get one scale; ``MatMul`` (the Dense layer, quantized
    to ``MatMulInteger``) gets one per output column likewise. Full 8-bit weights (``reduce_range`` off: the
    7-bit range is for CPUs without VNNI). What differs from rnnstream is what ONNX Runtime fixes: the
    activations (x, h) are uint8 with one scale and zero point per tensor, the whole batch's, computed at
    every step, where rnnstream gives each row its own scale. Its advice to pre-process the model first (symbolic
    shape inference and graph optimizations) is silenced: ``quantize_dynamic`` runs ONNX's shape inference
    itself, which sees every shape of this graph, and the session optimizes the quantized graph as it loads it.
    """
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as e:
        raise MissingDependencyError("onnxruntime-int8 needs onnxruntime.quantization: pip install onnx") from e
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "step-int8.onnx"
        before = logging.root.manager.disable
        logging.disable(max(before, logging.WARNING))
        try:
            quantize_dynamic(graph, path, per_channel=True, reduce_range=False, weight_type=QuantType.QInt8)
        finally:
            logging.disable(before)
        return path.read_bytes()


def _lstm_dense_chain(model: StreamModel) -> list[LSTM | Dense]:
    layers = [node.layer for node in model.graph.nodes]
    if len(model.inputs) != 1 or not all(isinstance(layer, LSTM | Dense) for layer in layers):
        raise UnsupportedLayerError("the PyTorch and Keras peers are built for chains of LSTM and Dense layers")
    return layers  # type: ignore[return-value]


def pytorch_peer(model: StreamModel, threads: int) -> Peer:
    try:
        import torch
    except ImportError as e:
        raise MissingDependencyError("pip install torch==2.13.0 (the CPU build)") from e
    torch.set_num_threads(threads)
    modules: list[Any] = []
    for layer in _lstm_dense_chain(model):
        if isinstance(layer, LSTM):  # PyTorch's gate order i, f, g, o is Keras'
            cell = torch.nn.LSTMCell(layer.Wx.shape[0], layer.units)
            cell.weight_ih.data = torch.from_numpy(np.ascontiguousarray(layer.Wx.T))
            cell.weight_hh.data = torch.from_numpy(np.ascontiguousarray(layer.Wh.T))
            cell.bias_ih.data = torch.from_numpy(layer.b.copy())
            cell.bias_hh.data = torch.zeros(4 * layer.units)
            modules.append(cell)
        else:
            linear = torch.nn.Linear(layer.W.shape[0], layer.W.shape[1], bias=layer.b is not None)
            linear.weight.data = torch.from_numpy(np.ascontiguousarray(layer.W.T))
            if layer.b is not None:
                linear.bias.data = torch.from_numpy(layer.b.copy())
            activation = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "linear": lambda t: t}[layer.activation_name]
            modules.append((linear, activation))

    def make(batch: int) -> StepFn:
        states = [
            (torch.zeros(batch, m.hidden_size), torch.zeros(batch, m.hidden_size))
            for m in modules
            if isinstance(m, torch.nn.LSTMCell)
        ]

        def step(x: FloatArray) -> Any:
            with torch.no_grad():
                t, k = torch.from_numpy(x), 0
                for m in modules:
                    if isinstance(m, torch.nn.LSTMCell):
                        states[k] = m(t, states[k])
                        t, k = states[k][0], k + 1
                    else:
                        t = m[1](m[0](t))
                return t.numpy()

        return step

    return Peer("pytorch", make)


def keras_stateful(model: StreamModel, batch: int) -> Any:
    """A Keras 3 model with ``stateful=True`` LSTMs holding ``model``'s weights, for batch ``batch``."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        import keras
    except ImportError as e:
        raise MissingDependencyError("pip install tensorflow-cpu keras") from e
    layers = _lstm_dense_chain(model)
    features = model.inputs[0].spec.shape[0]
    inp = keras.layers.Input((1, features), batch_size=batch)
    x, weights = inp, []
    for layer in layers:
        if isinstance(layer, LSTM):
            x = keras.layers.LSTM(layer.units, return_sequences=layer.return_sequences, stateful=True)(x)
            weights += [layer.Wx, layer.Wh, layer.b]
        else:
            x = keras.layers.Dense(layer.W.shape[1], activation=layer.activation_name, use_bias=layer.b is not None)(x)
            weights += [layer.W] + ([] if layer.b is None else [layer.b])
    keras_model = keras.Model(inp, x)
    keras_model.set_weights(weights)
    return keras_model


def keras_peers(model: StreamModel) -> list[Peer]:
    def predict(batch: int) -> StepFn:
        keras_model = keras_stateful(model, batch)
        return lambda x: keras_model.predict(x[:, None], verbose=0, batch_size=batch)

    def call(batch: int) -> StepFn:
        keras_model = keras_stateful(model, batch)
        return lambda x: np.asarray(keras_model(x[:, None]))

    return [Peer("keras-predict", predict), Peer("keras-call", call)]
