"""An ``.onnx`` file → a Graph of canonical layers, read node by node through explicit operator tables.

The graph's data inputs (those that are not initializers) are sequences ``[B, T, F]`` or
``[T, B, F]``, token ids ``[B, T]`` (or ``[T, B]``), or one step ``[B, F]``. Which axis is time is
worked out from the recurrent operators (their ``layout``); a float input used only through a
``Cast`` to integers (tf2onnx's Keras ``Embedding``) is read as token ids. Outputs come per step as
``[B, *features]``: the time axis and the unit axes an exporter added (ONNX's directions axis) are
not part of them, and a stack of states (PyTorch's ``h_n``) comes as one output per layer.

Operators: :data:`~rnnstream.importers.onnx_ops.COMPUTE`,
:data:`~rnnstream.importers.onnx_layout.LAYOUT`, ``LSTM``/``GRU``/``RNN``
(:mod:`~rnnstream.importers.onnx_recurrent`); anything else is refused by name. Nothing in the file
is executed: weights are initializers and ``Constant`` nodes, read as arrays.

>>> "LSTM" in OPERATORS and "Loop" in REFUSED
True
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np

from rnnstream.errors import ModelFileError, UnsupportedLayerError
from rnnstream.graph import Graph
from rnnstream.importers.axes import FEATURE, LayoutError, Stack, Tensor, Writer, input_layouts
from rnnstream.importers.onnx_conv import CONV
from rnnstream.importers.onnx_layout import LAYOUT
from rnnstream.importers.onnx_ops import COMPUTE, Handler, Op, pending_error
from rnnstream.importers.onnx_recurrent import recurrent
from rnnstream.layers.layer import TensorSpec

OPERATORS: dict[str, Handler] = {
    **COMPUTE, **LAYOUT, **CONV, "LSTM": recurrent, "GRU": recurrent, "RNN": recurrent,
}  # fmt: skip

_CONTROL = (
    "it is control flow; Keras exporters write some recurrent layers as a Loop (tf2onnx: SimpleRNN, a GRU "
    "with reset_after=False from tf.keras 2 or any GRU from Keras 3, an LSTM with recurrent_dropout; Keras 3's "
    "own export: GRU), which rnnstream does not read: load the Keras model file (.keras / .h5) itself instead"
)
_REDUCE = "it reduces over an axis: over time it needs the whole sequence; over features it is not supported"
REFUSED: dict[str, str] = {
    "Loop": _CONTROL, "Scan": _CONTROL, "If": _CONTROL,
    "ReverseSequence": "it reverses the sequence, which a stream reads from its start",
    "ReduceMean": _REDUCE, "ReduceSum": _REDUCE, "ReduceMax": _REDUCE, "ReduceMin": _REDUCE, "CumSum": _REDUCE,
    "Attention": "it attends over every time step, including steps that have not arrived yet",
}  # fmt: skip

_INTEGER_TYPES = {2, 3, 4, 5, 6, 7, 12, 13}  # onnx.TensorProto UINT8 ... INT64, UINT32, UINT64
_FLOAT_TYPES = {1, 10, 11, 16}  # FLOAT, FLOAT16, DOUBLE, BFLOAT16


def read_onnx(path: Path) -> tuple[Graph, str, str]:
    """The Graph of an ONNX file, the model's name and a description of the file."""
    import onnx
    from onnx import numpy_helper

    if not path.is_file():
        raise ModelFileError(f"{path} does not exist or is not a file")
    try:
        model = onnx.load(str(path))
    except Exception as e:  # protobuf's DecodeError, or a missing external-data file
        raise ModelFileError(f"{path} is not a readable ONNX model: {e}") from None
    opset = next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    graph = model.graph
    if not graph.node:
        raise ModelFileError(f"{path} has no graph nodes: not an ONNX model")
    for node in graph.node:  # said first: the nodes around a Loop (its condition, ...) make no sense alone
        if node.op_type in REFUSED and node.domain in ("", "ai.onnx"):
            raise UnsupportedLayerError(
                f"ONNX node {node.name or node.output[0]!r} ({node.op_type}) cannot stream: {REFUSED[node.op_type]}"
            )
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    data_inputs = [i for i in graph.input if i.name not in constants]
    if not data_inputs:
        raise UnsupportedLayerError(f"{path} has no data inputs")
    dtypes, candidates = [], []
    for value_info in data_inputs:
        integer = _input_is_integer(graph, value_info)
        dims = value_info.type.tensor_type.shape.dim
        dtypes.append("int64" if integer else "float32")
        candidates.append([(layout, dims) for layout in input_layouts(len(dims), integer)])
    first_mismatch: LayoutError | None = None
    for combo in itertools.product(*candidates):
        specs = [
            TensorSpec(_features(v.name, layout, dims), dtype=dtype)
            for v, (layout, dims), dtype in zip(data_inputs, combo, dtypes, strict=True)
        ]
        layouts = [layout for layout, _ in combo]
        try:
            built = _Reader(graph, opset, constants).run(data_inputs, specs, layouts)
            break
        except LayoutError as mismatch:  # time and batch the other way round: try the next layout
            first_mismatch = first_mismatch or mismatch
    else:
        assert first_mismatch is not None
        raise first_mismatch
    producer = f"{model.producer_name} {model.producer_version}".strip() or "unknown producer"
    return built, graph.name or path.stem, f"ONNX {path.name}, opset {opset}, from {producer}"


def _input_is_integer(graph: Any, value_info: Any) -> bool:
    """Token ids: an integer input, or a float input used only through a Cast to an integer type."""
    elem = value_info.type.tensor_type.elem_type
    if elem in _INTEGER_TYPES:
        return True
    if elem not in _FLOAT_TYPES:
        raise UnsupportedLayerError(f"input {value_info.name!r} has ONNX element type {elem}; floats or integers only")
    users = [n for n in graph.node if value_info.name in n.input]
    casts = [n for n in users if n.op_type == "Cast" and _attr(n, "to") in _INTEGER_TYPES]
    return bool(users) and len(casts) == len(users)


def _features(name: str, layout: tuple[str, ...], dims: Any) -> tuple[int, ...]:
    sizes = []
    for tag, d in zip(layout, dims, strict=True):
        if tag == FEATURE:
            if not d.dim_value:
                raise UnsupportedLayerError(
                    f"input {name!r} has a feature axis of unknown size ({d.dim_param or '?'}); export it with fixed "
                    "feature sizes (only batch and time may vary)"
                )
            sizes.append(int(d.dim_value))
    return tuple(sizes)


def _attr(node: Any, name: str) -> Any:
    import onnx

    for a in node.attribute:
        if a.name == name:
            value = onnx.helper.get_attribute_value(a)
            if isinstance(value, bytes):
                return value.decode()
            if isinstance(value, list) and value and isinstance(value[0], bytes):
                return [v.decode() for v in value]
            return value
    return None


class _Reader:
    """Reads the graph once, for one assumed layout of the inputs."""

    def __init__(self, graph: Any, opset: int, constants: dict[str, Any]) -> None:
        self.graph, self.opset = graph, opset
        self.values: dict[str, Any] = dict(constants)
        self.writer = Writer()
        self.done: set[int] = set()
        self.outputs = {o.name for o in graph.output}
        self.consumers: dict[str, list[Any]] = {}
        for node in graph.node:
            for name in set(node.input):
                self.consumers.setdefault(name, []).append(node)

    def sole_consumer(self, name: str) -> Any:
        users = self.consumers.get(name, [])
        return users[0] if len(users) == 1 and name not in self.outputs else None

    def constant(self, name: str) -> np.ndarray[Any, Any] | None:
        value = self.values.get(name)
        return value if isinstance(value, np.ndarray) else None

    def fuse(self, node: Any, value: Any) -> None:
        self.done.add(id(node))
        self.values[node.output[0]] = value

    def run(self, inputs: list[Any], specs: list[TensorSpec], layouts: list[tuple[str, ...]]) -> Graph:
        for value_info, spec, layout in zip(inputs, specs, layouts, strict=True):
            tensor = self.writer.builder.add_input(value_info.name, spec)
            self.writer.unique(value_info.name)
            self.values[value_info.name] = Tensor(tensor, layout)
        for node in self.graph.node:
            if id(node) not in self.done:
                self._node(node)
        return self._build_outputs()

    def _node(self, node: Any) -> None:
        name = node.name or node.output[0]
        where = f"ONNX node {name!r} ({node.op_type})"
        if node.domain not in ("", "ai.onnx"):
            raise UnsupportedLayerError(f"{where} is from operator set {node.domain!r}; only standard ONNX is read")
        missing = [n for n in node.input if n and n not in self.values]
        if missing:
            raise UnsupportedLayerError(f"{where} reads {missing}, which rnnstream does not compute")
        handler = OPERATORS.get(node.op_type)
        if handler is None:
            known = ", ".join(sorted(OPERATORS))
            raise UnsupportedLayerError(f"{where} is not an operator rnnstream reads. Known: {known}")
        inputs = [self.values[n] if n else None for n in node.input]
        pending = next((e for v in inputs if (e := pending_error(v)) is not None), None)
        if pending is not None and node.op_type not in CONV:  # only a Conv or the chomp Slice reads these
            raise pending
        attrs = {a.name: _attr(node, a.name) for a in node.attribute}
        outputs = handler(Op(node, name, self.writer, inputs, attrs, self.opset, self))
        for out_name, value in zip(node.output, outputs, strict=False):
            if out_name and id(node) not in self.done:
                self.values[out_name] = value

    def _build_outputs(self) -> Graph:
        tensors, names = [], []
        for output in self.graph.output:
            value = self.values.get(output.name)
            items = [(output.name, value)]
            if isinstance(value, Stack):
                items = [(f"{output.name}[{k}]", item) for k, item in enumerate(value.items)]
            for name, item in items:
                if (pending := pending_error(item)) is not None:
                    raise pending
                if not isinstance(item, Tensor):
                    raise UnsupportedLayerError(
                        f"graph output {name!r} is {'a constant' if isinstance(item, np.ndarray) else 'not a tensor'}; "
                        "rnnstream's outputs are tensors computed from the inputs"
                    )
                tensors.append(item.tensor)
                names.append(name)
        return self.writer.builder.build(tensors, names)
