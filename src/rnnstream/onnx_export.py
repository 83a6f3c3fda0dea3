"""Export a StreamModel's step as an ONNX model with the state row as an explicit input and output.

The exported graph takes the model's inputs at one step ``[B, *features]`` and ``state [B, S]``
(the same row layout as :class:`~rnnstream.State`) and returns the outputs at that step and
``new_state [B, S]``: the step model the second seed builds by hand, ready for ONNX Runtime or
Triton. Recurrent layers become ONNX ``LSTM`` / ``GRU`` / ``RNN`` operators over one time step.

Exported today: LSTM, GRU (both reset modes), SimpleRNN, Dense, Activation and LastStep layers with
the activations ``linear``, ``sigmoid``, ``tanh``, ``relu``, ``softsign`` (and ``softmax`` on Dense/Activation), and
the layers on feature axes (Reshape, Permute, FeatureSlice, FeatureReduce, ExpandDims, ConstantOp:
:mod:`~rnnstream.onnx_feature_ops`), in graphs without masks.
The recurrent variants of ONNX models (``clip``, peepholes, ``input_forget``,
a separate cell activation, activations with parameters) are written as ONNX attributes; an LSTM
projection (PyTorch ``proj_size``) has no ONNX form. Anything else is refused by name.

>>> import rnnstream, tempfile, os
>>> m = rnnstream.load(rnnstream.demo.SEED_MODEL)
>>> path = os.path.join(tempfile.mkdtemp(), "seed_step.onnx")
>>> m.export_onnx(path)  # doctest: +SKIP
"""

from __future__ import annotations

import os
from typing import Any, Protocol

import numpy as np

from rnnstream.errors import MissingDependencyError, UnsupportedLayerError
from rnnstream.graph import Graph, Node
from rnnstream.layers import elementwise
from rnnstream.layers.dense import Activation, Dense
from rnnstream.layers.layer import TensorSpec
from rnnstream.layers.recurrent import GRU, LSTM, Recurrent, SimpleRNN
from rnnstream.layers.sequence import LastStep
from rnnstream.onnx_feature_ops import FEATURE_LAYERS, feature_op
from rnnstream.types import FloatArray


class StepModel(Protocol):
    """What is exported of a model (a :class:`~rnnstream.StreamModel`): its graph, name and fingerprint."""

    name: str
    graph: Graph
    fingerprint: str

    @property
    def output_specs(self) -> list[TensorSpec]: ...

OPSET = 17
ONNX_ACTIVATIONS = {"sigmoid": "Sigmoid", "tanh": "Tanh", "relu": "Relu", "softsign": "Softsign"}
STATE_INPUT, STATE_OUTPUT = "state", "new_state"
STATE_LAYOUTS = ("row", "parts")
"""The ``state`` layouts of :func:`export_onnx` (``rnnstream export --state`` offers these)."""


def export_onnx(model: StepModel, path: str | os.PathLike[str], *, state: str = "row") -> None:
    """Write ``model``'s step to ``path`` (see the module docstring); needs the ``onnx`` package.

    ``state="row"``: one ``state [B, S]`` input and ``new_state [B, S]`` output, the layout of
    :class:`~rnnstream.State`. ``state="parts"``: one input per state part, ``"{layer}.{part}"``
    of shape ``[1, B, units]`` (what ONNX ``LSTM``/``GRU``/``RNN`` take as ``initial_h``/``initial_c``),
    and outputs ``"{layer}.{part}.new"``: fewer operators, for engines that keep the parts apart.
    """
    try:
        import onnx
    except ImportError as e:
        raise MissingDependencyError("export_onnx needs the onnx package: pip install 'rnnstream[onnx]'") from e
    onnx.save(build_step_graph(model, state=state), os.fspath(path))


def step_signature(proto: Any) -> str:
    """An exported step's inputs and outputs with their shapes (``proto``: an ``onnx.ModelProto``).

    >>> import rnnstream
    >>> print(step_signature(build_step_graph(rnnstream.load(rnnstream.demo.SEED_MODEL))))
    input [B, 4], state [B, 600] → output [B, 1], new_state [B, 600]
    """

    def listed(values: Any) -> str:
        shapes = [", ".join(d.dim_param or str(d.dim_value) for d in v.type.tensor_type.shape.dim) for v in values]
        return ", ".join(f"{v.name} [{shape}]" for v, shape in zip(values, shapes, strict=True))

    return f"{listed(proto.graph.input)} → {listed(proto.graph.output)}"


def build_step_graph(model: StepModel, *, state: str = "row") -> Any:
    """The step as an ``onnx.ModelProto`` (checked by ``onnx.checker``); ``state`` as in export_onnx."""
    w = _Writer()
    inputs, names = _step_inputs(model.graph, state)
    pieces, squeezed = _write_nodes(w, model.graph, state, names)
    outputs = _step_outputs(w, model, names)
    outputs += _state_outputs(w, model.graph, state, pieces, squeezed)
    return _checked_model(model, w, inputs, outputs)


def _step_inputs(graph: Graph, state: str) -> tuple[list[Any], dict[int, str]]:
    """The graph's inputs at one step and its state input(s); the name of each input tensor, by tensor."""
    from onnx import TensorProto, helper

    names: dict[int, str] = {}
    inputs = []
    for spec in graph.inputs:
        dtype = TensorProto.INT64 if spec.spec.dtype == "int64" else TensorProto.FLOAT
        inputs.append(helper.make_tensor_value_info(spec.name, dtype, ["B", *spec.spec.shape]))
        names[spec.tensor] = spec.name
        if spec.spec.dtype != "float32":
            raise UnsupportedLayerError(f"export_onnx: input {spec.name!r} takes token ids; not exported yet")
    if state not in STATE_LAYOUTS:
        raise UnsupportedLayerError(f"export_onnx: state must be one of {', '.join(STATE_LAYOUTS)}, not {state!r}")
    if state == "row":
        inputs.append(helper.make_tensor_value_info(STATE_INPUT, TensorProto.FLOAT, ["B", graph.state_size]))
    else:
        for p in graph.state_layout:
            inputs.append(
                helper.make_tensor_value_info(f"{p.layer}.{p.part}", TensorProto.FLOAT, [1, "B", p.stop - p.start])
            )
    return inputs, names


def _write_nodes(w: _Writer, graph: Graph, state: str, names: dict[int, str]) -> tuple[list[str], dict[str, str]]:
    """Every node of ``graph``, its outputs' names added to ``names``: the new state parts ``(1, B, size)`` in
    column order, and each of them as ``(B, size)``."""
    parts = {(p.layer, p.part): p for p in graph.state_layout}
    pieces: list[str] = []  # new state parts, (1, B, size) each, in column order
    squeezed: dict[str, str] = {}  # a new state part → the same as (B, size)
    for node in graph.nodes:
        if node.mask >= 0:
            raise UnsupportedLayerError(f"export_onnx: node {node.name!r} is given a mask; masks are not exported")
        x = names[node.inputs[0]]
        layer = node.layer
        if isinstance(layer, Recurrent):
            if state == "row":
                initial = [_state_columns(w, parts[node.name, part].start, size) for part, size in layer.state_parts]
            else:
                initial = [f"{node.name}.{part}" for part, _ in layer.state_parts]
            new_parts = _recurrent(w, layer, x, initial)
            pieces += new_parts
            flat = [squeezed.setdefault(t, _squeeze(w, t)) for t in new_parts]  # (B, units): output, then states
            for tensor, name in zip(node.outputs, [flat[0], *flat], strict=False):
                names[tensor] = name
        else:
            names[node.outputs[0]] = _feedforward(w, graph, node, x)
    return pieces, squeezed


def _feedforward(w: _Writer, graph: Graph, node: Node, x: str) -> str:
    """A node without state, on input ``x``: its output."""
    layer = node.layer
    if isinstance(layer, Dense) and len(graph.specs[node.inputs[0]].shape) == 1:
        z = w.op("MatMul", [x, w.const(layer.W)])
        if layer.b is not None:
            z = w.op("Add", [z, w.const(layer.b)])
        return _activation(w, layer.activation_name, z, layer.name)
    if isinstance(layer, Activation):
        return _activation(w, layer.activation_name, x, layer.name)
    if isinstance(layer, LastStep):  # at one step, the last step is this step
        return x
    y = feature_op(w, layer, x)
    if y is not None:
        return y
    raise UnsupportedLayerError(
        f"export_onnx: layer {layer.name!r} ({layer.kind}) is not exported yet; exported are LSTM, GRU, "
        f"SimpleRNN, Dense, Activation, LastStep and {', '.join(c.__name__ for c in FEATURE_LAYERS)}"
    )


def _step_outputs(w: _Writer, model: StepModel, names: dict[int, str]) -> list[Any]:
    """The model's outputs at the step, under their own names."""
    from onnx import TensorProto, helper

    graph = model.graph
    outputs = []
    for name, tensor, out_spec in zip(graph.output_names, graph.outputs, model.output_specs, strict=True):
        w.nodes.append(helper.make_node("Identity", [names[tensor]], [name]))
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["B", *out_spec.shape]))
    return outputs


def _state_outputs(w: _Writer, graph: Graph, state: str, pieces: list[str], squeezed: dict[str, str]) -> list[Any]:
    """The new state: one ``new_state [B, S]`` row (``state="row"``), or one output per part."""
    from onnx import TensorProto, helper

    outputs = []
    if state == "row":
        flat = [squeezed[t] for t in pieces]
        new_state = w.op("Concat", flat, axis=1) if flat else w.op("Identity", [STATE_INPUT])
        w.nodes.append(helper.make_node("Identity", [new_state], [STATE_OUTPUT]))
        outputs.append(helper.make_tensor_value_info(STATE_OUTPUT, TensorProto.FLOAT, ["B", graph.state_size]))
    else:
        for p, piece in zip(graph.state_layout, pieces, strict=True):
            name = f"{p.layer}.{p.part}.new"
            w.nodes.append(helper.make_node("Identity", [piece], [name]))
            outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, "B", p.stop - p.start]))
    return outputs


def _checked_model(model: StepModel, w: _Writer, inputs: list[Any], outputs: list[Any]) -> Any:
    """The ``onnx.ModelProto`` of ``w``'s nodes, checked by ``onnx.checker``."""
    import onnx
    from onnx import helper

    onnx_graph = helper.make_graph(w.nodes, f"{model.name}_step", inputs, outputs, w.initializers)
    proto = helper.make_model(onnx_graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="rnnstream")
    proto.doc_string = f"rnnstream step model of {model.name!r}; state layout fingerprint {model.fingerprint}"
    onnx.checker.check_model(proto)
    return proto


class _Writer:
    """Collects nodes and initializers, naming every intermediate tensor."""

    def __init__(self) -> None:
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._count = 0

    def name(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def const(self, value: FloatArray | np.ndarray[Any, Any], hint: str = "const") -> str:
        from onnx import numpy_helper

        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(np.array(value, order="C"), name))  # 0-d stays 0-d
        return name

    def op(self, kind: str, inputs: list[str], n_out: int = 1, **attrs: Any) -> Any:
        from onnx import helper

        outs = [self.name(kind.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(kind, inputs, outs, **attrs))
        return outs[0] if n_out == 1 else outs


def _activation(w: _Writer, name: str, x: str, layer: str) -> str:
    if name == "linear":
        return x
    if name == "softmax":
        return str(w.op("Softmax", [x], axis=-1))
    if name not in ONNX_ACTIVATIONS:
        raise UnsupportedLayerError(f"export_onnx: layer {layer!r}: activation {name!r} is not exported yet")
    return str(w.op(ONNX_ACTIVATIONS[name], [x]))


def _state_columns(w: _Writer, start: int, size: int) -> str:
    """``state[:, start:start+size]`` as ``(1, B, size)``: the initial_h / initial_c of an ONNX RNN op."""
    cols = w.op("Slice", [STATE_INPUT, w.const(_ints(start)), w.const(_ints(start + size)),
                          w.const(_ints(1))])  # fmt: skip
    return str(w.op("Unsqueeze", [cols, w.const(_ints(0))]))


def _squeeze(w: _Writer, t: str) -> str:
    """``(1, B, units)`` → ``(B, units)``."""
    return str(w.op("Squeeze", [t, w.const(_ints(0))]))


def _recurrent(w: _Writer, layer: Recurrent, x: str, initial: list[str]) -> list[str]:
    """One step of ``layer`` from its initial state parts ``(1, B, units)``: the new parts, same shape.

    ONNX's operators carry rnnstream's variants as they are (``clip``, peepholes, ``input_forget``, a
    separate cell activation, activations with parameters); only an LSTM projection has no ONNX form.
    """
    H = layer.units
    if isinstance(layer, LSTM) and layer.projection is not None:
        raise UnsupportedLayerError(
            f"export_onnx: layer {layer.name!r} is an LSTM with a projection (PyTorch proj_size), which the "
            "ONNX LSTM operator has no input for; it is not exported"
        )
    f, g = layer.recurrent_activation_name, layer.activation_name
    attrs: dict[str, Any] = {"hidden_size": H}
    if layer.clip is not None:
        attrs["clip"] = float(layer.clip)
    seq = w.op("Unsqueeze", [x, w.const(_ints(0))])  # (1, B, I)
    if isinstance(layer, LSTM):
        order = _gates([0, 3, 1, 2], H)  # Keras i f g o → ONNX i o f c
        W, R = layer.Wx[:, order].T[None], layer.Wh[:, order].T[None]
        B = np.concatenate([layer.b[order], np.zeros(4 * H, np.float32)])[None]
        peepholes = [] if layer.peepholes is None else [w.const(layer.peepholes[[0, 2, 1]].reshape(1, 3 * H))]
        h_act = layer.cell_activation_name or g
        _rnn_activations(attrs, layer.name, [f, g, h_act])
        if layer.input_forget:
            attrs["input_forget"] = 1
        _, h, c = w.op("LSTM", [seq, w.const(W), w.const(R), w.const(B), "", *initial, *peepholes], n_out=3,
                       **attrs)  # fmt: skip
        return [h, c]
    if isinstance(layer, GRU):
        W, R = layer.Wx.T[None], layer.Wh.T[None]  # gate order z r n is ONNX's z r h
        bh = layer.bh if layer.bh is not None else np.zeros(3 * H, np.float32)
        B = np.concatenate([layer.bx, bh])[None]
        _rnn_activations(attrs, layer.name, [f, g])
        _, h = w.op("GRU", [seq, w.const(W), w.const(R), w.const(B), "", *initial], n_out=2,
                    linear_before_reset=int(layer.reset_after), **attrs)  # fmt: skip
        return [h]
    assert isinstance(layer, SimpleRNN)
    B = np.concatenate([layer.b, np.zeros(H, np.float32)])[None]
    _rnn_activations(attrs, layer.name, [g])
    _, h = w.op("RNN", [seq, w.const(layer.Wx.T[None]), w.const(layer.Wh.T[None]), w.const(B), "", *initial],
                n_out=2, **attrs)  # fmt: skip
    return [h]


_RNN_PARAMETRIC = {"affine": "Affine", "leaky_relu": "LeakyRelu", "thresholded_relu": "ThresholdedRelu",
                   "scaled_tanh": "ScaledTanh", "hard_sigmoid": "HardSigmoid", "elu": "Elu"}  # fmt: skip


def _rnn_activations(attrs: dict[str, Any], layer: str, names: list[str]) -> None:
    """Set ``activations`` (and ``activation_alpha`` / ``activation_beta``, consumed in order) for ``names``."""
    funcs: list[str] = []
    alphas: list[float] = []
    betas: list[float] = []
    for name in names:
        parsed = elementwise.parse(name)
        if parsed is None and name in ONNX_ACTIVATIONS:
            funcs.append(ONNX_ACTIVATIONS[name])
        elif parsed is not None:
            kind, params = parsed
            funcs.append(_RNN_PARAMETRIC[kind])
            alphas.append(params["alpha"])
            betas += [params["beta"]] if "beta" in params else []
        else:
            raise UnsupportedLayerError(f"export_onnx: layer {layer!r}: activations {names} are not exported yet")
    attrs["activations"] = funcs
    if alphas:
        attrs["activation_alpha"] = alphas
    if betas:
        attrs["activation_beta"] = betas


def _ints(*values: int) -> np.ndarray[Any, np.dtype[np.int64]]:
    return np.array(values, dtype=np.int64)


def _gates(order: list[int], H: int) -> np.ndarray[Any, np.dtype[np.int64]]:
    """Column indices that put gate blocks of width H in ``order``."""
    return np.concatenate([np.arange(k * H, (k + 1) * H) for k in order])
