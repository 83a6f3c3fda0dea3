"""One node of a traced ``forward``, as the PyTorch importer's tables see it: :class:`Call`.

>>> from rnnstream.importers.axes import Writer
>>> Call("relu", "operation 'relu' (relu)", Writer(), (), {}).refuse("an example").args[0]
"operation 'relu' (relu): an example"
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rnnstream.errors import UnsupportedLayerError
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
        if isinstance(value, Stack):
            raise self.refuse(f"its {role} is a stack of every layer's state (h_n): pick a layer, e.g. h_n[-1]")
        raise self.refuse(f"its {role} is {describe(value)}, not a tensor of the model")


Handler = Callable[[Call], Any]


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
