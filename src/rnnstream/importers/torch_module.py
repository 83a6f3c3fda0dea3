"""A PyTorch module → StreamModel: trace ``forward`` with torch.fx, then map every node through explicit tables.

``forward`` is traced symbolically (torch.fx), with the ``torch.nn`` modules rnnstream knows as
leaves; what the trace records is then read node by node: modules through
:data:`~rnnstream.importers.torch_layers.MODULES`, functions and methods through
:data:`~rnnstream.importers.torch_glue.FUNCTIONS` and :data:`~rnnstream.importers.torch_glue.METHODS`.
Nothing is guessed from attribute names, and what is not in a table is refused by name.

Two shapes of module stream:

- **Sequence modules** take whole sequences ``[B, T, F]`` (or ``[T, B, F]``, or token ids
  ``[B, T]``) and run ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` over them. Which input axis is time is
  worked out from the recurrent modules' ``batch_first``. Taking the last step (``out[:, -1]``,
  ``h_n[-1]``) gives a whole-sequence value, as Keras' ``return_sequences=False`` does. A TCN may take
  its input channels first, ``[B, C, T]`` (:mod:`~rnnstream.importers.torch_inputs`).
- **Step modules** take one step ``[B, F]`` (or token ids ``[B]``) and call ``nn.LSTMCell`` /
  ``nn.GRUCell`` / ``nn.RNNCell`` on it without a state (or with ``None``, or zeros): rnnstream keeps
  each cell's state from one step to the next. Everything ``forward`` returns is an output, the
  cells' new states too if it returns them.

Parameters of ``forward`` after the example inputs are traced with their defaults (e.g. ``h0=None``).
"""

from __future__ import annotations

import inspect
import itertools
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.fx

from rnnstream.errors import RnnstreamError, UnsupportedLayerError
from rnnstream.graph import Graph
from rnnstream.importers.axes import FEATURE, LayoutError, Stack, Tensor, Writer, Zeros
from rnnstream.importers.torch_call import Call, Param, pending_error
from rnnstream.importers.torch_checkpoint import load_checkpoint, unwrap
from rnnstream.importers.torch_glue import FUNCTIONS, METHODS, PARAMETER_FUNCTIONS, handler_of
from rnnstream.importers.torch_inputs import InputLayout, candidates, input_dtype
from rnnstream.importers.torch_layers import MODULES, REFUSED, module_kind
from rnnstream.importers.torch_weights import module_class
from rnnstream.layers.layer import TensorSpec
from rnnstream.model import StreamModel


def import_module(
    module: Any,
    example_input: Any,
    *,
    checkpoint: str | os.PathLike[str] | None = None,
    input_layout: InputLayout = None,
    backend: str = "auto",
    threads: int | None = None,
    precision: str = "fp32",
) -> StreamModel:
    """:func:`rnnstream.from_torch` once torch is known to be installed."""
    if not isinstance(module, torch.nn.Module):
        raise UnsupportedLayerError(f"from_torch expects a torch.nn.Module, got {type(module).__qualname__}")
    examples = tuple(example_input) if isinstance(example_input, tuple | list) else (example_input,)
    if not examples or not all(isinstance(e, torch.Tensor) for e in examples):
        raise UnsupportedLayerError(
            "example_input must be a tensor or a tuple of tensors (one per input of forward), "
            f"got {type(example_input).__qualname__}"
        )
    module, wrappers = unwrap(module)
    source = f"PyTorch module {type(module).__name__}" + "".join(f" (unwrapped from {w})" for w in wrappers)
    if checkpoint is not None:
        source += " with " + load_checkpoint(module, Path(checkpoint))
    training = module.training
    module.eval()  # trace what inference does: F.dropout(x, training=self.training) reads False
    try:
        graph = _build(module, examples, input_layout)
    finally:
        module.train(training)
    return StreamModel(
        graph, name=type(module).__name__, source=source, backend=backend, threads=threads, precision=precision
    )


def _build(module: Any, examples: tuple[Any, ...], input_layout: InputLayout) -> Graph:
    graph = _trace(module, len(examples))
    placeholders = [n for n in graph.nodes if n.op == "placeholder"][: len(examples)]
    if len(placeholders) != len(examples):
        raise UnsupportedLayerError(
            f"example_input has {len(examples)} tensors, but forward takes {len(placeholders)} inputs"
        )
    dtypes = [input_dtype(str(node.target), example) for node, example in zip(placeholders, examples, strict=True)]
    first_mismatch: LayoutError | None = None
    for layouts in itertools.product(*candidates(module, placeholders, examples, input_layout)):
        specs = [
            TensorSpec(tuple(int(d) for d, tag in zip(e.shape, layout, strict=True) if tag == FEATURE), dtype=dtype)
            for e, layout, dtype in zip(examples, layouts, dtypes, strict=True)
        ]
        try:
            return _Interpreter(module, graph, specs, list(layouts)).run()
        except LayoutError as mismatch:  # time and batch the other way round: try the next layout
            first_mismatch = first_mismatch or mismatch
    assert first_mismatch is not None
    raise first_mismatch


def _trace(module: Any, n_inputs: int) -> Any:
    """forward as a torch.fx Graph; parameters after the first ``n_inputs`` take their defaults."""
    parameters = list(inspect.signature(module.forward).parameters.values())
    if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in parameters):
        raise UnsupportedLayerError(f"{type(module).__name__}.forward takes *args or **kwargs; name its inputs")
    concrete: dict[str, Any] = {}
    for p in parameters[n_inputs:]:
        if p.default is p.empty:
            raise UnsupportedLayerError(
                f"{type(module).__name__}.forward needs argument {p.name!r}, but example_input has only "
                f"{n_inputs} tensors; give one per input, or a default (e.g. {p.name}=None)"
            )
        concrete[p.name] = p.default

    class Tracer(torch.fx.Tracer):
        def is_leaf_module(self, m: Any, qualified_name: str) -> bool:
            known = module_class(m)
            return known in MODULES or known in REFUSED or bool(super().is_leaf_module(m, qualified_name))

    try:
        return Tracer().trace(module, concrete_args=concrete or None)
    except Exception as e:  # tracing runs the user's forward, which may raise anything
        raise UnsupportedLayerError(
            f"{type(module).__name__}.forward cannot be traced by torch.fx ({type(e).__name__}: {e}). "
            "forward must not branch or loop on tensor values or sizes; for a loop over time steps, write "
            "forward for one step [B, F] with nn.LSTMCell / nn.GRUCell / nn.RNNCell (rnnstream keeps their state)"
        ) from None


class _Interpreter:
    """Reads a traced graph once, for one assumed layout of the inputs."""

    def __init__(self, module: Any, graph: Any, specs: list[TensorSpec], layouts: list[tuple[str, ...]]) -> None:
        self.module, self.graph, self.specs, self.layouts = module, graph, specs, layouts
        self.writer = Writer()

    def run(self) -> Graph:
        env: dict[Any, Any] = {}
        inputs = 0
        for node in self.graph.nodes:
            if node.op == "placeholder":
                if inputs < len(self.specs):
                    env[node] = self._input(node, inputs)
                    inputs += 1
                else:
                    env[node] = node.args[0] if node.args else None  # a traced default, e.g. h0=None
            elif node.op == "output":
                return self._outputs(self._substitute(node.args[0], env))
            else:
                env[node] = self._call(node, env)
        raise UnsupportedLayerError("the traced forward has no output")

    def _input(self, node: Any, index: int) -> Tensor:
        tensor = self.writer.builder.add_input(str(node.target), self.specs[index])
        self.writer.unique(str(node.target))
        return Tensor(tensor, self.layouts[index])

    def _call(self, node: Any, env: dict[Any, Any]) -> Any:
        args = self._substitute(node.args, env)
        kwargs = self._substitute(node.kwargs, env)
        if node.op == "get_attr":
            return self._param(str(node.target))
        if node.op == "call_module":
            module = self.module.get_submodule(node.target)
            call = Call(node.name, f"module {node.target!r} ({module_kind(module)})", self.writer, tuple(args),
                        dict(kwargs))  # fmt: skip
            handler: Any = MODULES.get(module_class(module))
            if handler is None:
                reason = REFUSED.get(module_class(module))
                if reason is not None:
                    raise call.refuse(f"cannot stream: {reason}")
                raise call.refuse(f"is not a module rnnstream knows. Supported: {_supported()}")
            _no_params(call)
            return _guarded(call, lambda: handler(call, module))
        label = getattr(node.target, "__name__", str(node.target))
        handler = handler_of(node.target) if node.op == "call_function" else METHODS.get(node.target)
        call = Call(node.name, f"operation {node.name!r} ({label})", self.writer, tuple(args), dict(kwargs))
        if node.target not in PARAMETER_FUNCTIONS:
            _no_params(call)
        if handler is None:
            known = sorted({getattr(f, "__name__", str(f)) for f in FUNCTIONS} | {f".{m}()" for m in METHODS})
            raise call.refuse(f"is not an operation rnnstream reads from a traced forward. Known: {', '.join(known)}")
        return _guarded(call, lambda: handler(call))

    def _param(self, target: str) -> Param:
        """A tensor of the module read in forward; only F.linear and F.layer_norm take one (PARAMETER_FUNCTIONS)."""
        value: Any = self.module
        for part in target.split("."):
            value = getattr(value, part, None)
        if not isinstance(value, torch.Tensor):
            raise UnsupportedLayerError(f"forward reads {target!r}, a {type(value).__name__}, not a tensor")
        array = value.detach().cpu().to(torch.float32).numpy()
        return Param(target, np.array(array, dtype=np.float32, copy=True))

    def _substitute(self, value: Any, env: dict[Any, Any]) -> Any:
        return torch.fx.node.map_aggregate(value, lambda v: env[v] if isinstance(v, torch.fx.Node) else v)

    def _outputs(self, value: Any) -> Graph:
        tensors: list[int] = []
        names: list[str] = []

        def collect(v: Any, name: str) -> None:
            if isinstance(v, Tensor):
                tensors.append(v.tensor)
                names.append(name)
            elif isinstance(v, Stack):
                for k, item in enumerate(v.items):
                    collect(item, f"{name}[{k}]")
            elif isinstance(v, tuple | list):
                for k, item in enumerate(v):
                    collect(item, f"{name}_{k}")
            elif isinstance(v, dict):
                for key, item in v.items():
                    collect(item, str(key))
            elif (pending := pending_error(v)) is not None:
                raise pending
            elif isinstance(v, Zeros):
                raise UnsupportedLayerError(f"forward returns a tensor of zeros as {name!r}; return model outputs only")
            else:
                raise UnsupportedLayerError(f"forward returns {type(v).__name__} as {name!r}; return tensors only")

        collect(value, "output")
        return self.writer.builder.build(tensors, names)


def _no_params(call: Call) -> None:
    """Refuse a tensor of the module read directly where only tensors of the model (or numbers) may go."""
    found = [v for v in (*call.args, *call.kwargs.values()) if isinstance(v, Param)]
    if found:
        raise call.refuse(
            f"forward uses the tensor {found[0].name!r} directly; rnnstream reads the module's tensors as the weight "
            "and bias of F.linear / F.layer_norm, or through the modules it knows (nn.Linear, nn.LSTM, ...): wrap "
            "the computation in such a module"
        )


def _guarded(call: Call, build: Any) -> Any:
    """``build()``, with a Python error from reading an unexpected argument refused in the node's name."""
    try:
        return build()
    except RnnstreamError:
        raise
    except (TypeError, ValueError, KeyError, IndexError, AttributeError) as e:
        raise call.refuse(
            f"cannot be read ({type(e).__name__}: {e}); its arguments are not the kind rnnstream reads here"
        ) from None


def _supported() -> str:
    return ", ".join(sorted(f"nn.{cls.__name__}" for cls in MODULES))
