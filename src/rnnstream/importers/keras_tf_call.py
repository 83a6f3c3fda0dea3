"""The call a tf.keras 2 TF-op node records (``TFOpLambda``, ``SlicingOpLambda``), read as data.

The first argument sits in the node itself: a tensor ``[layer, node, index, kwargs]``, a constant
``["_CONSTANT_VALUE", -1, value, kwargs]``, or a list of those (``tf.concat([a, b])``); the other
arguments are keyword arguments holding constants or tensors ``[layer, node, index]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rnnstream.importers.keras_context import LayerContext

TensorKey = tuple[str, int, int]
CONSTANT = "_CONSTANT_VALUE"
TF_OP_CLASSES = ("TFOpLambda", "SlicingOpLambda")


@dataclass(frozen=True)
class TensorArg:
    """A tensor argument of a TF call: input ``index`` of the layer."""

    index: int


@dataclass(frozen=True)
class TFCall:
    """One recorded call: the first argument and the keyword arguments (constants or :class:`TensorArg`)."""

    first: Any
    kwargs: dict[str, Any]

    def arg(self, ctx: LayerContext, key: str, default: Any = None) -> Any:
        value = self.kwargs.get(key, default)
        if isinstance(value, TensorArg):
            raise ctx.refuse(f"argument {key!r} is a tensor of the graph; rnnstream reads it only as a constant")
        return value


def _is_ref(value: Any) -> bool:
    return (isinstance(value, list | tuple) and len(value) in (3, 4) and isinstance(value[0], str)
            and isinstance(value[1], int) and isinstance(value[2], int) and value[0] != CONSTANT)


def read_call(node: Any) -> tuple[list[TensorKey], TFCall]:
    """The tensors a TF-op node reads, in order, and its call with tensors replaced by :class:`TensorArg`."""
    refs: list[TensorKey] = []

    def arg(value: Any) -> Any:
        if _is_ref(value):
            refs.append((str(value[0]), int(value[1]), int(value[2])))
            return TensorArg(len(refs) - 1)
        if isinstance(value, list | tuple):
            return [arg(v) for v in value]
        if isinstance(value, dict):
            return {k: arg(v) for k, v in value.items()}
        return value

    single = isinstance(node, list | tuple) and bool(node) and isinstance(node[0], str)
    entries = [node] if single else list(node)
    firsts = [e[2] if e[0] == CONSTANT else arg(e[:3]) for e in entries]
    kwargs = entries[0][3] if entries and len(entries[0]) > 3 and isinstance(entries[0][3], dict) else {}
    first = firsts[0] if single else firsts
    return refs, TFCall(first, {k: arg(v) for k, v in kwargs.items() if k != "name"})
