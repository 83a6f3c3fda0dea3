"""The torch backend: the step as torch operations on a CPU or CUDA device.

- :class:`TorchProgram` walks the graph like the NumPy oracle, with each node's torch step from
  :mod:`rnnstream.backends.torch_steps` (a node without one runs its NumPy step on host copies).
- :class:`TorchBackend` (``backend="torch"``) is the program behind ``StreamModel.step``: NumPy in,
  NumPy out, so every call uploads the inputs and the state rows and downloads the new rows.

:class:`rnnstream.device_batch.DeviceBatch` keeps a batch's state on the device, on this backend's program.

The device defaults to ``cuda`` when torch sees a GPU, else ``cpu``. Float32 throughout; with
TF32 matrix products switched on (``torch.backends.cuda.matmul.allow_tf32``, off by default) results
drift from the oracle by ~1e-3.

>>> import numpy as np, rnnstream
>>> model = rnnstream.load(rnnstream.demo.SEED_MODEL)
>>> backend = TorchBackend(model.graph, device="cpu")
>>> ys, rows = backend.step([np.ones((3, 4), np.float32)], model.initial_state(3).rows)
>>> bool(np.allclose(ys[0], model.step(np.ones((3, 4), np.float32), model.initial_state(3))[0], atol=1e-6))
True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rnnstream.errors import InputError, MissingDependencyError

try:
    import torch
except ImportError as e:
    raise MissingDependencyError(
        "the torch backend needs PyTorch: pip install 'rnnstream[torch]' (the CPU build), or for a GPU "
        "the CUDA build from https://pytorch.org; or use backend='fused' or 'numpy'"
    ) from e
from torch import Tensor

from rnnstream.backends.backend import StepOnly
from rnnstream.backends.torch_cells import NodeStep, Result
from rnnstream.backends.torch_graph import upload
from rnnstream.backends.torch_steps import MaskRule, mask_rule, torch_step
from rnnstream.graph import IMPLICIT_MASK, Graph, Node
from rnnstream.layers.dense import Embedding, Identity
from rnnstream.types import Array, FloatArray


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device`` as a torch device (``None``: ``cuda`` when torch sees a GPU, else ``cpu``).

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        found = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"device {device!r} is not a torch device; use 'cpu', 'cuda' or 'cuda:N'") from None
    if found.type not in ("cpu", "cuda"):
        raise InputError(f"device {device!r}: the torch backend runs on 'cpu' or 'cuda', not {found.type!r}")
    if found.type == "cuda":
        if not torch.cuda.is_available():
            raise MissingDependencyError(
                f"device {device!r}: torch {torch.__version__} sees no CUDA GPU; install the CUDA build of "
                "torch (https://pytorch.org) on a machine with an NVIDIA GPU, or use device='cpu'"
            )
        if found.index is not None and found.index >= torch.cuda.device_count():
            raise InputError(f"device {device!r}: torch sees {torch.cuda.device_count()} CUDA device(s)")
    return found


@dataclass(frozen=True)
class _Planned:
    node: Node
    step: NodeStep
    rule: MaskRule | None  # how the node combines its inputs' masks; None when its mask is explicit


class TorchProgram:
    """``graph``'s step as torch operations on ``device``, weights uploaded once."""

    def __init__(self, graph: Graph, device: torch.device) -> None:
        self.graph = graph
        self.device = device
        self.host_nodes: dict[str, str] = {}
        """Nodes that run their NumPy step (or mask rule) on host copies, with the reason."""
        self._vocabularies: list[tuple[int, Embedding]] = []  # (model input index, embedding fed by it)
        self._plan: list[_Planned] = []
        for node in graph.nodes:
            step = torch_step(node.layer, device)
            if isinstance(node.layer, Embedding) and not isinstance(step, str):
                source = _model_input(graph, node.inputs[0])
                if source is None:
                    step = "token ids not read straight from a model input cannot be range-checked before upload"
                else:
                    self._vocabularies.append((source, node.layer))
            rule = mask_rule(node.layer) if node.mask == IMPLICIT_MASK else None
            if node.mask == IMPLICIT_MASK and rule is None:
                self.host_nodes[node.name] = f"{type(node.layer).__name__} combines masks in its own way"
                rule = self._host_rule(node)
            if isinstance(step, str):
                self.host_nodes[node.name] = step
                step = self._host_step(node)
            self._plan.append(_Planned(node, step, rule))

    def check_tokens(self, xs: Sequence[Array]) -> None:
        """Refuse token ids outside an Embedding's vocabulary, on the host, before anything is uploaded."""
        for source, layer in self._vocabularies:
            ids, vocab = xs[source], layer.E.shape[0]
            bad = (ids < 0) | (ids >= vocab)
            if np.any(bad):
                raise InputError(
                    f"token id {int(ids[bad][0])} is out of range for Embedding {layer.name!r} "
                    f"(vocabulary of {vocab}: ids 0..{vocab - 1})"
                )

    def run(self, xs: list[Tensor], state: Tensor) -> tuple[list[Tensor], Tensor]:
        """Inputs ``[B, *features]`` and state ``[B, S]`` on the device → outputs and a new state tensor.

        The same walk as the oracle's: each node reads its inputs, its mask and its state columns."""
        graph = self.graph
        values: list[Tensor | None] = [None] * len(graph.specs)
        masks: list[Tensor | None] = [None] * len(graph.specs)
        for spec, x in zip(graph.inputs, xs, strict=True):
            values[spec.tensor] = x
        pieces = []  # new state slices in column order: GraphBuilder gives nodes consecutive columns in node order
        for planned in self._plan:
            node = planned.node
            inputs: list[Tensor] = [values[t] for t in node.inputs]  # type: ignore[misc]
            if planned.rule is not None:
                mask = planned.rule([masks[t] for t in node.inputs])
            else:
                mask = values[node.mask] if node.mask >= 0 else None
            outputs, out_mask, new = planned.step(inputs, mask, state[:, node.start : node.stop])
            if node.stop > node.start:
                pieces.append(new)
            for i, tensor in enumerate(node.outputs):
                values[tensor] = outputs[i]
                masks[tensor] = out_mask if i == 0 else None
        new_state = torch.cat(pieces, dim=1) if pieces else torch.empty_like(state)
        return [values[t] for t in graph.outputs], new_state  # type: ignore[misc]

    def _host_step(self, node: Node) -> NodeStep:
        """The layer's NumPy step on host copies of its inputs, mask and state (the host API only)."""

        def step(inputs: list[Tensor], mask: Tensor | None, state: Tensor) -> Result:
            result = node.layer.step([_host(x) for x in inputs], None if mask is None else _host(mask), _host(state))
            outputs = [upload(y, self.device) for y in result.outputs]
            out_mask = None if result.mask is None else upload(result.mask, self.device)
            return outputs, out_mask, upload(result.state, self.device)

        return step

    def _host_rule(self, node: Node) -> MaskRule:
        def rule(masks: list[Tensor | None]) -> Tensor | None:
            mask = node.layer.combine_masks([None if m is None else _host(m) for m in masks])
            return None if mask is None else upload(mask, self.device)

        return rule


def _host(t: Tensor) -> Array:
    return t.detach().cpu().numpy()


def _model_input(graph: Graph, tensor: int) -> int | None:
    """The index of the model input that ``tensor`` is, directly or through Identity layers; else None."""
    producers = {out: node for node in graph.nodes for out in node.outputs}
    while tensor in producers and type(producers[tensor].layer) is Identity:
        tensor = producers[tensor].inputs[0]
    return next((i for i, spec in enumerate(graph.inputs) if spec.tensor == tensor), None)


class TorchBackend(StepOnly):
    """``StreamModel.step`` in torch on ``device``; ``threads`` sets torch's CPU threads (process-wide).

    Each call uploads the inputs and the state rows and downloads the outputs and new rows: on a GPU
    the state crosses the bus twice per step. Keep the state on the device with
    :class:`rnnstream.device_batch.DeviceBatch`.
    """

    name = "torch"

    def __init__(self, graph: Graph, *, device: str | torch.device | None = None, threads: int | None = None) -> None:
        self.graph = graph
        self.device = resolve_device(device)
        if threads is not None:
            torch.set_num_threads(max(1, threads))
        self.program = TorchProgram(graph, self.device)

    @property
    def threads(self) -> int:
        """torch's CPU threads (process-wide)."""
        return int(torch.get_num_threads())

    @property
    def host_nodes(self) -> dict[str, str]:
        """Nodes that run their NumPy step on host copies, with the reason (usually none)."""
        return dict(self.program.host_nodes)

    def step(self, xs: list[Array], state: FloatArray) -> tuple[list[FloatArray], FloatArray]:
        """Validated inputs ``[B, *features]`` and state ``[B, S]`` → outputs and a new state array."""
        self.program.check_tokens(xs)
        with torch.no_grad():
            ys, new_state = self.program.run([upload(x, self.device) for x in xs], upload(state, self.device))
            return [_host(y) for y in ys], _host(new_state)
