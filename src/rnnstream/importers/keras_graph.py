"""A Keras model config (Sequential or Functional, Keras 2 or 3 layout) → a Graph of canonical layers.

Functional configs list, per layer, the calls (``inbound_nodes``) that made its outputs; a tensor is
``(layer name, call index, output index)``. Calls are added once all their inputs exist, which
yields a topological order.
"""

from __future__ import annotations

from typing import Any

from rnnstream.errors import ModelFileError, UnsupportedLayerError
from rnnstream.graph import IMPLICIT_MASK, NO_MASK, Graph, GraphBuilder
from rnnstream.importers.keras_context import LayerContext
from rnnstream.importers.keras_files import KerasSource
from rnnstream.importers.keras_layers import build_layers
from rnnstream.importers.keras_ops import OPS, build_op
from rnnstream.importers.keras_tf_call import TF_OP_CLASSES, read_call
from rnnstream.importers.keras_tf_ops import build_tf_op
from rnnstream.layers.layer import Layer, TensorSpec

TensorKey = tuple[str, int, int]

_RECURRENT = {"LSTM", "GRU", "SimpleRNN", "RNN"}


def build_graph(source: KerasSource) -> tuple[Graph, str]:
    """Return the Graph and the model's name."""
    cfg = source.model_config
    if not isinstance(cfg, dict) or "config" not in cfg:
        raise ModelFileError("the model config has no 'config' section: not a Keras model")
    kind = cfg.get("class_name")
    body = cfg["config"]
    name = str(body.get("name", "model")) if isinstance(body, dict) else "model"
    if kind == "Sequential":
        return _sequential(body, source), name
    if kind in ("Functional", "Model") and isinstance(body, dict) and "layers" in body:
        return _functional(body, source), name
    raise UnsupportedLayerError(
        f"model class {kind!r} is a subclassed model (its call() is Python code, which rnnstream never "
        "runs); rebuild it with the Sequential or Functional API and save it as .keras"
    )


def _input_spec(entry_config: dict[str, Any], fallback_shape: Any = None) -> TensorSpec:
    """What one step of a model input is: ``(B, T, *features)`` floats, ``(B, T)`` token ids (an integer
    dtype), ``(B, T)`` floats (one number per step: the time axis has no fixed size), or ``(B, F)`` floats
    with a fixed ``F``: a model without a time axis, which streams as one independent input per step."""
    shape = entry_config.get("batch_shape") or entry_config.get("batch_input_shape") or fallback_shape
    if shape is None:
        raise ModelFileError("the model's input shape is not recorded; build the model with an Input(...) first")
    shape = list(shape)
    integer = _dtype_name(entry_config.get("dtype")).startswith(("int", "uint"))
    if len(shape) == 2 and (integer or shape[1] is None):  # (batch, time): one token id or number per step
        return TensorSpec((), dtype="int64" if integer else "float32")
    if len(shape) < 2:
        raise UnsupportedLayerError(
            f"the model input has shape {tuple(shape)}: rnnstream needs (batch, time, features), (batch, time) "
            "token ids, or (batch, features)"
        )
    features = shape[1:] if len(shape) == 2 else shape[2:]
    if any(d is None for d in features):
        raise UnsupportedLayerError(f"the input's feature sizes must be known, got {tuple(shape)}")
    return TensorSpec(tuple(int(d) for d in features), sequence=len(shape) > 2)


def _dtype_name(dtype: Any) -> str:
    """A config's dtype: a name, or (Keras 3 layer configs) a DTypePolicy ``{"config": {"name": ...}}``."""
    if isinstance(dtype, dict):
        return str((dtype.get("config") or {}).get("name") or "float32")
    return str(dtype or "float32")


def _make_layers(entry: dict[str, Any], inputs: list[TensorSpec], source: KerasSource, call: Any = None) -> list[Layer]:
    """The canonical layers of one Keras layer (several for ``RNN(StackedRNNCells)``), chained on output 0."""
    name = _name(entry)
    class_name = str(entry.get("class_name"))
    if class_name in TF_OP_CLASSES:  # tf.keras 2's TF-op node: the config names the TF function
        function = str((entry.get("config") or {}).get("function"))
        ctx = LayerContext(name, function, entry.get("config") or {}, [], inputs, source.keras_major)
        return build_tf_op(ctx, read_call(call or [])[1])
    module = str(entry.get("module") or "keras")
    if entry.get("registered_name") and not module.startswith("keras"):
        raise UnsupportedLayerError(
            f"layer {name!r} ({entry.get('registered_name')}) is a custom layer from module {module!r}: "
            "custom layers are code, which rnnstream never loads from a file"
        )
    weights = [] if _is_op(entry) else source.weights(name)
    ctx = LayerContext(name, class_name, entry.get("config") or {}, weights, inputs, source.keras_major,
                       module=str(entry.get("module") or ""))
    return build_op(ctx, call) if _is_op(entry) else build_layers(ctx)


def _is_op(entry: dict[str, Any]) -> bool:
    """A ``keras.ops`` operation node (Keras 3 writes them for masks and ``keras.ops`` calls), not a layer.

    ``.keras`` files name the ops module; the legacy ``.h5`` writer drops it, but an op's config,
    unlike every layer's, has no ``trainable`` key.
    """
    module = str(entry.get("module") or "")
    if module:
        return module.startswith("keras.src.ops") or module.startswith("keras.ops")
    return entry.get("class_name") in OPS and "trainable" not in (entry.get("config") or {})


def _name(entry: dict[str, Any]) -> str:
    return str(entry.get("name") or (entry.get("config") or {}).get("name", ""))


def _sequential(body: dict[str, Any], source: KerasSource) -> Graph:
    entries = list(body.get("layers", []))
    if not entries:
        raise ModelFileError("the Sequential model has no layers")
    builder = GraphBuilder()
    if entries[0].get("class_name") == "InputLayer":
        first = entries.pop(0)
        spec = _input_spec(first.get("config", {}))
        x = builder.add_input(_name(first), spec)
    else:
        first_config = entries[0].get("config", {})
        spec = _input_spec(first_config, body.get("build_input_shape"))
        x = builder.add_input("input", spec)
    for entry in entries:
        config = entry.get("config") or {}
        if entry.get("class_name") in _RECURRENT and config.get("return_state"):
            raise UnsupportedLayerError(
                f"layer {_name(entry)!r} has return_state=True inside a Sequential model, which Keras cannot "
                "run; use the Functional API to expose states, or drop return_state"
            )
        layers = _make_layers(entry, [builder.spec(x)], source)
        x = _add_chain(builder, _name(entry), layers, [x], IMPLICIT_MASK)[0]
    return builder.build([x], [_name(entries[-1]) if entries else "output"])


def _triples(value: Any) -> list[tuple[str | None, TensorKey]]:
    """Flatten ``input_layers``/``output_layers`` (a triple, a list, or a dict) in Keras' order.

    Returns ``(key, triple)`` pairs: ``key`` is the dict key for dict-structured models.
    """
    if isinstance(value, list | tuple) and len(value) == 3 and isinstance(value[0], str):
        return [(None, (str(value[0]), int(value[1]), int(value[2])))]
    if isinstance(value, dict):
        pairs = []
        for key in sorted(value):  # Keras flattens dicts in sorted key order
            pairs += [(key, t) for _, t in _triples(value[key])]
        return pairs
    if isinstance(value, list | tuple):
        return [pair for item in value for pair in _triples(item)]
    raise ModelFileError(f"cannot read model inputs/outputs {value!r}")


def _call_refs(node: Any, entry: dict[str, Any]) -> tuple[list[TensorKey], dict[str, Any]]:
    """The tensors a call reads and its keyword arguments, for Keras 3 and Keras 2 node layouts."""
    if entry.get("class_name") in TF_OP_CLASSES:  # its keyword arguments are the TF function's
        return read_call(node)[0], {}
    if isinstance(node, dict):  # Keras 3: {"args": [...], "kwargs": {...}}
        refs: list[TensorKey] = []
        _collect_tensors(node.get("args", []), refs)
        kwargs = dict(node.get("kwargs") or {})
        if kwargs.get("mask") is not None:  # an explicit mask tensor is read too, after the inputs
            _collect_tensors(kwargs["mask"], refs)
        return refs, kwargs
    refs, kwargs = [], {}
    for item in node:  # Keras 2: [[layer, node, tensor, kwargs], ...]
        try:
            refs.append((str(item[0]), int(item[1]), int(item[2])))
        except (TypeError, ValueError, IndexError):
            raise ModelFileError(f"layer {_name(entry)!r}: cannot read its call {node!r} (inbound_nodes)") from None
        if len(item) > 3 and isinstance(item[3], dict):
            kwargs.update(item[3])
    return refs, kwargs


def _collect_tensors(value: Any, out: list[TensorKey]) -> None:
    if isinstance(value, dict):
        if value.get("class_name") == "__keras_tensor__":
            layer, node, tensor = value["config"]["keras_history"]
            out.append((str(layer), int(node), int(tensor)))
        else:
            for item in value.values():
                _collect_tensors(item, out)
    elif isinstance(value, list | tuple):
        for item in value:
            _collect_tensors(item, out)


def _has_tensor(value: Any) -> bool:
    found: list[TensorKey] = []
    _collect_tensors(value, found)
    return bool(found)


def _functional(body: dict[str, Any], source: KerasSource) -> Graph:
    entries = {_name(e): e for e in body["layers"]}
    builder = GraphBuilder()
    tensors: dict[TensorKey, int] = {}
    for _, (name, node, index) in _triples(body.get("input_layers", [])):
        entry = entries.get(name)
        if entry is None or entry.get("class_name") != "InputLayer":
            raise ModelFileError(f"model input {name!r} is not an InputLayer of the model")
        tensors[(name, node, index)] = builder.add_input(name, _input_spec(entry.get("config", {})))

    pending = [
        (entry, call_index, call)
        for entry in body["layers"]
        if entry.get("class_name") != "InputLayer"
        for call_index, call in enumerate(entry.get("inbound_nodes") or [])
    ]
    layers: dict[str, list[Layer]] = {}
    while pending:
        waiting = []
        for entry, call_index, call in pending:
            if not all(ref in tensors for ref in _call_refs(call, entry)[0]):
                waiting.append((entry, call_index, call))
                continue
            _add_call(builder, entry, call_index, call, tensors, layers, source)
        if len(waiting) == len(pending):
            missing = sorted({r[0] for e, _, c in waiting for r in _call_refs(c, e)[0] if r not in tensors})
            raise ModelFileError(f"the model graph reads tensors no layer makes (from {missing}); is it a cycle?")
        pending = waiting

    outputs, names = [], []
    for key, triple in _triples(body.get("output_layers", [])):
        if triple not in tensors:
            raise ModelFileError(f"model output {triple} is not made by any layer")
        outputs.append(tensors[triple])
        names.append(key or (triple[0] if triple[2] == 0 else f"{triple[0]}:{triple[2]}"))
    return builder.build(outputs, names)


def _add_call(
    builder: GraphBuilder,
    entry: dict[str, Any],
    call_index: int,
    call: Any,
    tensors: dict[TensorKey, int],
    layers: dict[str, list[Layer]],
    source: KerasSource,
) -> None:
    name = _name(entry)
    refs, kwargs = _call_refs(call, entry)
    mask = IMPLICIT_MASK
    if "mask" in kwargs:  # Keras >= 3.10 passes masks explicitly; None means "no mask"
        mask = NO_MASK if kwargs["mask"] is None else tensors[refs.pop()]
    elif entry.get("class_name") in TF_OP_CLASSES or _is_op(entry):
        # An operation drops its input's mask: tf.keras 2's TF-op layers do not support masking, and
        # keras.ops outputs carry none (keras-team/keras#18416; Keras >= 3.10 writes the None down).
        mask = NO_MASK
    if entry.get("class_name") in _RECURRENT and (len(refs) > 1 or _has_tensor(kwargs.get("initial_state"))):
        raise UnsupportedLayerError(
            f"layer {name!r} is called with initial_state from the graph (a hand-made step model): "
            "rnnstream keeps each stream's state itself; load the plain full-sequence model instead"
        )
    extra = sorted(k for k, v in kwargs.items() if k != "mask" and _has_tensor(v))
    if extra:
        raise UnsupportedLayerError(f"layer {name!r} is called with graph tensors as {extra}; not supported")
    inputs = [tensors[r] for r in refs]
    if name not in layers:
        layers[name] = _make_layers(entry, [builder.spec(t) for t in inputs], source, call)
    node_name = name if call_index == 0 else f"{name}@{call_index}"
    for index, tensor in enumerate(_add_chain(builder, node_name, layers[name], inputs, mask)):
        tensors[(name, call_index, index)] = tensor


def _add_chain(builder: GraphBuilder, node_name: str, layers: list[Layer], inputs: list[int], mask: int) -> list[int]:
    """Add one Keras call: its layers in a chain (each reads the previous one's output 0; the call's mask
    goes to the first). The call's outputs: the last layer's output 0, then every layer's other outputs
    in order (the states of stacked cells, cell by cell, as Keras lists them)."""
    if len(layers) == 1:
        return builder.add_node(node_name, layers[0], inputs, mask)
    extra: list[int] = []
    x = inputs
    for i, layer in enumerate(layers):
        outputs = builder.add_node(f"{node_name}/cell_{i}", layer, x, mask if i == 0 else IMPLICIT_MASK)
        x, extra = outputs[:1], extra + outputs[1:]
    return x + extra
