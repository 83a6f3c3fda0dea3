"""The stateless layers that reshape, slice, reduce or rescale a step's feature axes, as ONNX operators
(:func:`rnnstream.onnx_export.export_onnx` writes them into the step model).

A step tensor is ``[B, *features]``; every layer here works on feature axes only, so each maps to one
ONNX operator on axis ``k + 1`` (or a negative axis, which never reaches the batch):
``Reshape`` → ``Reshape`` to ``[-1, *shape]``, ``Permute`` → ``Transpose``, ``FeatureSlice`` → ``Slice``
(and ``Gather`` for an index, which drops the axis), ``FeatureReduce`` → ``ReduceMean`` / ``ReduceSum`` /
``ReduceMax`` / ``ReduceMin``, ``ExpandDims`` → ``Unsqueeze``, ``ConstantOp`` → ``Add`` / ``Sub`` / ``Mul`` /
``Div`` with the constant.

>>> from rnnstream.layers.reshape import Permute
>>> class Names:
...     def const(self, value, hint="const"): return "c"
...     def op(self, kind, inputs, n_out=1, **attrs): return f"{kind}({', '.join(inputs)}, {attrs})"
>>> feature_op(Names(), Permute("p", perm=(1, 0)), "x")
"Transpose(x, {'perm': [0, 2, 1]})"
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from rnnstream.layers.elementwise import ConstantOp
from rnnstream.layers.features import FeatureReduce, FeatureSlice
from rnnstream.layers.layer import Layer
from rnnstream.layers.ops import ExpandDims
from rnnstream.layers.reshape import Permute, Reshape

INT64_MAX = np.iinfo(np.int64).max
INT64_MIN = np.iinfo(np.int64).min


class Writer(Protocol):
    """What an export writes with: constants (initializers) and operators, each returning its output's name."""

    def const(self, value: Any, hint: str = "const") -> str: ...

    def op(self, kind: str, inputs: list[str], n_out: int = 1, **attrs: Any) -> Any: ...


FEATURE_LAYERS = (Reshape, Permute, FeatureSlice, FeatureReduce, ExpandDims, ConstantOp)
"""The layer classes :func:`feature_op` writes."""


def feature_op(w: Writer, layer: Layer, x: str) -> str | None:
    """``layer`` applied to the step tensor named ``x``: its output's name, or None if it is not one of
    :data:`FEATURE_LAYERS`."""
    if isinstance(layer, Reshape):
        return str(w.op("Reshape", [x, w.const(np.array([-1, *layer.shape], dtype=np.int64))]))
    if isinstance(layer, Permute):
        return str(w.op("Transpose", [x], perm=[0, *(p + 1 for p in layer.perm)]))
    if isinstance(layer, FeatureSlice):
        return _slice(w, layer, x)
    if isinstance(layer, FeatureReduce):
        return _reduce(w, layer, x)
    if isinstance(layer, ExpandDims):
        return str(w.op("Unsqueeze", [x, w.const(np.array([layer.axis], dtype=np.int64))]))
    if isinstance(layer, ConstantOp):
        return _constant_op(w, layer, x)
    return None


def _slice(w: Writer, layer: FeatureSlice, x: str) -> str:
    """``x[:, *index]``: one ``Slice`` over the sliced axes, then a ``Gather`` per indexed axis (last first, so
    the axes before it keep their numbers)."""
    starts: list[int] = []
    ends: list[int] = []
    axes: list[int] = []
    steps: list[int] = []
    for k, i in enumerate(layer.index):
        if isinstance(i, int):
            continue
        start, stop, step = i[0], i[1], 1 if i[2] is None else i[2]
        starts.append((0 if step > 0 else INT64_MAX) if start is None else start)
        ends.append((INT64_MAX if step > 0 else INT64_MIN) if stop is None else stop)
        axes.append(k + 1)
        steps.append(step)
    if axes:
        x = str(w.op("Slice", [x, *(w.const(np.array(v, dtype=np.int64)) for v in (starts, ends, axes, steps))]))
    for k, i in reversed(list(enumerate(layer.index))):
        if isinstance(i, int):
            x = str(w.op("Gather", [x, w.const(np.array(i, dtype=np.int64))], axis=k + 1))
    return x


_REDUCE = {"mean": "ReduceMean", "sum": "ReduceSum", "max": "ReduceMax", "min": "ReduceMin"}


def _reduce(w: Writer, layer: FeatureReduce, x: str) -> str:
    """Over the layer's (negative, feature) axes; at opset 17 only ``ReduceSum`` takes its axes as an input."""
    axes, keepdims = list(layer.axes), int(layer.keepdims)
    if layer.op == "sum":
        return str(w.op("ReduceSum", [x, w.const(np.array(axes, dtype=np.int64))], keepdims=keepdims))
    return str(w.op(_REDUCE[layer.op], [x], axes=axes, keepdims=keepdims))


_ARITHMETIC = {"add": "Add", "sub": "Sub", "mul": "Mul", "div": "Div"}


def _constant_op(w: Writer, layer: ConstantOp, x: str) -> str:
    """``x ∘ c``, or ``c ∘ x`` for ``rsub`` / ``rdiv``; ``c`` broadcasts over the feature axes."""
    c = w.const(layer.constant)
    if layer.op in _ARITHMETIC:
        return str(w.op(_ARITHMETIC[layer.op], [x, c]))
    return str(w.op("Sub" if layer.op == "rsub" else "Div", [c, x]))
