"""The ``keras.ops`` operations Keras 3 writes into functional graphs to compute masks.

Keras ≥ 3.10 records a layer's mask as graph nodes (``NotEqual``, ``Any``, ``LogicalOr``, …) and
passes it to mask-consuming layers through their ``mask`` argument. These layers compute those masks
per step; they work on feature axes only (a mask over time would need the future).

>>> import numpy as np
>>> Compare("ne", op="not_equal", value=0.0).apply([np.float32([[0.0, 1.0], [0.0, 0.0]])])
array([[False,  True],
       [False, False]])
"""

from __future__ import annotations

from functools import reduce
from typing import Any

import numpy as np

from rnnstream.layers.layer import StatelessLayer, TensorSpec
from rnnstream.types import Array, BoolArray, FloatArray


class MaskOp(StatelessLayer):
    """An operation on mask tensors: it produces values, never a Keras mask of its own."""

    def output_mask(self, inputs: list[FloatArray], mask: BoolArray | None) -> BoolArray | None:
        return None

    def _axis(self, x: TensorSpec, axis: int) -> int:
        """A feature axis (negative) of ``x`` for ``axis``, already mapped by the importer."""
        if not -len(x.shape) <= axis < 0:
            raise self.refuse(f"axis {axis} is not a feature axis of {x.describe()}")
        return axis


class Compare(MaskOp):
    """``x != value`` or ``x == value``, elementwise."""

    kind = "compare"

    def __init__(self, name: str, *, op: str, value: float) -> None:
        super().__init__(name)
        self.op, self.value = op, value

    def output_spec(self, x: TensorSpec) -> TensorSpec:
        return TensorSpec(x.shape, dtype="bool", sequence=x.sequence)

    def apply(self, inputs: list[FloatArray]) -> Array:
        x = inputs[0]
        return np.asarray(x != self.value if self.op == "not_equal" else x == self.value, dtype=bool)

    def config(self) -> dict[str, Any]:
        return {"op": self.op, "value": self.value}


class Reduce(MaskOp):
    """``any`` / ``all`` over feature axes."""

    kind = "reduce"

    def __init__(self, name: str, *, op: str, axes: tuple[int, ...], keepdims: bool) -> None:
        super().__init__(name)
        self.op, self.axes, self.keepdims = op, axes, keepdims

    def output_spec(self, x: TensorSpec) -> TensorSpec:
        axes = {self._axis(x, a) % len(x.shape) for a in self.axes}
        shape = tuple(1 if i in axes else d for i, d in enumerate(x.shape)) if self.keepdims else tuple(
            d for i, d in enumerate(x.shape) if i not in axes
        )
        return TensorSpec(shape, dtype="bool", sequence=x.sequence)

    def apply(self, inputs: list[FloatArray]) -> Array:
        fn = np.any if self.op == "any" else np.all
        return np.asarray(fn(inputs[0], axis=self.axes, keepdims=self.keepdims), dtype=bool)

    def config(self) -> dict[str, Any]:
        return {"op": self.op, "axes": self.axes, "keepdims": self.keepdims}


class Logical(MaskOp):
    """``or`` / ``and`` of several masks, or ``not`` of one; shapes broadcast as in NumPy."""

    kind = "logical"

    def __init__(self, name: str, *, op: str) -> None:
        super().__init__(name)
        self.op = op

    def output_specs(self, inputs: list[TensorSpec]) -> list[TensorSpec]:
        if (self.op == "not") != (len(inputs) == 1):
            raise self.refuse(f"logical {self.op} got {len(inputs)} inputs")
        try:
            shape = np.broadcast_shapes(*(x.shape for x in inputs))
        except ValueError:
            raise self.refuse(f"cannot broadcast {[x.describe() for x in inputs]}") from None
        return [TensorSpec(tuple(shape), dtype="bool", sequence=inputs[0].sequence)]

    def apply(self, inputs: list[FloatArray]) -> Array:
        if self.op == "not":
            return np.logical_not(inputs[0])
        return reduce(np.logical_or if self.op == "or" else np.logical_and, inputs)

    def config(self) -> dict[str, Any]:
        return {"op": self.op}


class ExpandDims(MaskOp):
    """Insert a feature axis of size 1 (``axis`` counts feature axes, negative)."""

    kind = "expand_dims"

    def __init__(self, name: str, *, axis: int) -> None:
        super().__init__(name)
        self.axis = axis

    def output_spec(self, x: TensorSpec) -> TensorSpec:
        position = len(x.shape) + 1 + self.axis
        if not 0 <= position <= len(x.shape):
            raise self.refuse(f"axis {self.axis} is not a feature axis of {x.describe()}")
        return TensorSpec((*x.shape[:position], 1, *x.shape[position:]), dtype=x.dtype, sequence=x.sequence)

    def apply(self, inputs: list[FloatArray]) -> Array:
        return np.expand_dims(inputs[0], self.axis)

    def config(self) -> dict[str, Any]:
        return {"axis": self.axis}


class Fill(MaskOp):
    """``ones_like`` / ``zeros_like``: a constant with the input's shape."""

    kind = "fill"

    def __init__(self, name: str, *, value: float, dtype: str) -> None:
        super().__init__(name)
        self.value, self.dtype = value, dtype

    def output_spec(self, x: TensorSpec) -> TensorSpec:
        return TensorSpec(x.shape, dtype="bool" if self.dtype == "bool" else "float32", sequence=x.sequence)

    def apply(self, inputs: list[FloatArray]) -> Array:
        return np.full(inputs[0].shape, self.value, dtype=bool if self.dtype == "bool" else np.float32)

    def config(self) -> dict[str, Any]:
        return {"value": self.value, "dtype": self.dtype}


class Join(MaskOp):
    """``ops.concatenate`` of masks along a feature axis."""

    kind = "join"

    def __init__(self, name: str, *, axis: int) -> None:
        super().__init__(name)
        self.axis = axis

    def output_specs(self, inputs: list[TensorSpec]) -> list[TensorSpec]:
        first = inputs[0]
        axis = self._axis(first, self.axis) % len(first.shape)
        if any(len(x.shape) != len(first.shape) for x in inputs):
            raise self.refuse(f"cannot join {[x.describe() for x in inputs]}")
        joined = sum(x.shape[axis] for x in inputs)
        shape = (*first.shape[:axis], joined, *first.shape[axis + 1 :])
        return [TensorSpec(shape, dtype=first.dtype, sequence=first.sequence)]

    def apply(self, inputs: list[FloatArray]) -> Array:
        return np.concatenate(inputs, axis=self.axis)

    def config(self) -> dict[str, Any]:
        return {"axis": self.axis}
