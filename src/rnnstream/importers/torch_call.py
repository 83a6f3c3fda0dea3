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
from rnnstream.importers.axes import NodeContext, Shape, Stack, Tensor, Writer, Zeros
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


@dataclass(frozen=True)
class TimePadded:
    """A ``[B, C, T]`` sequence padded on its time axis (``F.pad``, ``nn.ConstantPad1d``) by ``what``: only a
    ``Conv1d`` may read it, which streams when the ``left`` padding is exactly its window's past."""

    x: Tensor
    left: int
    right: int
    what: str


@dataclass(frozen=True)
class Unchomped:
    """The output ``y`` of a padded ``Conv1d`` (``what``) whose last ``extra`` steps read inputs that have not
    arrived yet: only the chomp ``y[:, :, :-extra]`` that drops them may read it."""

    y: Tensor
    extra: int
    what: str


def pending_error(value: Any) -> UnsupportedLayerError | None:
    """Why a padded time axis or an unchomped convolution cannot be used as a tensor of the model (or None)."""
    if isinstance(value, TimePadded):
        return UnsupportedLayerError(
            f"{value.what}: pads the time axis, and the padded sequence is not read by a Conv1d whose window spans "
            "exactly the padding; padding a stream's time axis only streams as part of a causal convolution"
        )
    if isinstance(value, Unchomped):
        return UnsupportedLayerError(
            f"{value.what}: is not causal: its last {value.extra} outputs read inputs that have not arrived yet "
            f"(padding at the end of the time axis); drop them right after it with y[:, :, :-{value.extra}] (a "
            f"chomp), or pad only the start of the time axis"
        )
    return None


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
    """A copy of ``module.<name>`` as float32, checked against ``shape``."""
    tensor = getattr(module, name, None)
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
