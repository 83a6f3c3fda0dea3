"""One node of a traced ``forward``, as the PyTorch importer's tables see it: :class:`Call`.

>>> from rnnstream.importers.axes import Writer
>>> Call("relu", "operation 'relu' (relu)", Writer(), (), {}).refuse("an example").args[0]
"operation 'relu' (relu): an example"
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from rnnstream.errors import ModelFileError, UnsupportedLayerError
from rnnstream.importers import causal_padding
from rnnstream.importers.axes import NodeContext, Shape, Stack, Tensor, Writer, Zeros
from rnnstream.importers.causal_padding import Unchomped
from rnnstream.importers.torch_weights import effective
from rnnstream.types import FloatArray


@dataclass(frozen=True)
class Meta:
    """A tensor's ``device`` or ``dtype``: only ever passed on (``.to(x.device)``)."""

    what: str


@dataclass(frozen=True, eq=False)
class Param:
    """A tensor of the module read directly in forward (``self.w``, ``self.lin.weight``): a float32 copy."""

    name: str
    value: FloatArray


def pending_error(value: Any) -> UnsupportedLayerError | None:
    """Why a padded time axis or an unchomped ``Conv1d`` cannot be used as a tensor of the model (or None)."""
    extra = value.extra if isinstance(value, Unchomped) else 0
    return causal_padding.pending_error(value, conv="Conv1d", chomp=f"y[:, :, :-{extra}] (a chomp)",
                                         tensor="sequence")


@dataclass
class Call(NodeContext):
    """One node of the traced graph, with its arguments already read."""

    name: str
    what: str
    writer: Writer
    args: tuple[Any, ...]
    kwargs: dict[str, Any]

    def refuse(self, why: str) -> UnsupportedLayerError:
        return UnsupportedLayerError(f"{self.what}: {why}")

    def arg(self, index: int, name: str, default: Any = None) -> Any:
        if index < len(self.args):
            return self.args[index]
        return self.kwargs.get(name, default)

    def tensor(self, value: Any, role: str = "input") -> Tensor:
        if isinstance(value, Tensor):
            return value
        pending = pending_error(value)
        if pending is not None:
            raise pending
        if isinstance(value, Stack):
            raise self.refuse(f"its {role} is a stack of every layer's state (h_n): pick a layer, e.g. h_n[-1]")
        raise self.refuse(f"its {role} is {describe(value)}, not a tensor of the model")


Handler = Callable[[Call], Any]


def weight(call: Call, module: Any, name: str, shape: tuple[int, ...]) -> FloatArray:
    """A copy of ``module.<name>`` as float32 (as forward computes it: :mod:`~rnnstream.importers.torch_weights`),
    checked against ``shape``."""
    try:
        tensor = effective(module, name)
    except UnsupportedLayerError as e:
        raise call.refuse(str(e)) from None
    if not isinstance(tensor, torch.Tensor):
        raise ModelFileError(f"{call.what}: weight {name!r} is missing")
    array = np.array(tensor.detach().cpu().to(torch.float32).numpy(), dtype=np.float32, copy=True)
    if array.shape != shape:
        raise ModelFileError(f"{call.what}: weight {name!r} has shape {array.shape}, expected {shape}")
    return array


def describe(value: Any) -> str:
    if isinstance(value, Zeros):
        return "a tensor of zeros built in forward"
    if isinstance(value, Shape | Meta):
        return "a size, device or dtype"
    if isinstance(value, Tensor):
        return "a tensor computed in forward"
    if isinstance(value, Param):
        return f"the module's tensor {value.name!r}"
    return f"a Python {type(value).__name__}"
