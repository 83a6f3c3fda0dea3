"""Merge layers (Add, Subtract, Multiply, Average, Maximum, Minimum, Concatenate) and Masking.

Merges combine tensors of one step; the output mask is the AND of the input masks, as in Keras.

>>> import numpy as np
>>> Merge("m", op="average").apply([np.float32([[1.0]]), np.float32([[3.0]])])
array([[2.]], dtype=float32)
"""

from __future__ import annotations

from functools import reduce
from typing import Any

import numpy as np

from rnnstream.layers.layer import StatelessLayer, TensorSpec, float_input, last_dim
from rnnstream.types import BoolArray, FloatArray

_OPS = ("add", "subtract", "multiply", "average", "maximum", "minimum")


class _KerasMerge(StatelessLayer):
    """Mask rule of merges: Keras 2 ANDs the masks present; Keras 3 ORs them, and drops the mask
    when any input has none (its Concatenate fills missing masks with True, to the same effect)."""

    def __init__(self, name: str, *, keras_major: int) -> None:
        super().__init__(name)
        self.keras_major = keras_major

    def combine_masks(self, masks: list[BoolArray | None]) -> BoolArray | None:
        if self.keras_major < 3:
            return super().combine_masks(masks)
        if any(m is None for m in masks):
            return None
        return reduce(np.logical_or, masks)  # type: ignore[arg-type]



class Merge(_KerasMerge):
    """Elementwise merge of same-shaped tensors."""

    kind = "merge"

    def __init__(self, name: str, *, op: str, keras_major: int = 3) -> None:
        super().__init__(name, keras_major=keras_major)
        if op not in _OPS:
            raise self.refuse(f"unknown merge {op!r}; known: {', '.join(_OPS)}")
        self.op = op

    def output_specs(self, inputs: list[TensorSpec]) -> list[TensorSpec]:
        if len(inputs) < 2 or (self.op == "subtract" and len(inputs) != 2):
            expected = "exactly 2" if self.op == "subtract" else "at least 2"
            raise self.refuse(f"needs {expected} inputs, got {len(inputs)}")
        for x in inputs:
            float_input(self, x)
        first = inputs[0]
        if any(x.shape != first.shape or x.sequence != first.sequence for x in inputs):
            shapes = ", ".join(x.describe() for x in inputs)
            raise self.refuse(f"inputs must have one shape (broadcasting is not supported), got {shapes}")
        return [first]

    def apply(self, inputs: list[FloatArray]) -> FloatArray:
        if self.op == "add":
            return reduce(np.add, inputs)
        if self.op == "subtract":
            return inputs[0] - inputs[1]
        if self.op == "multiply":
            return reduce(np.multiply, inputs)
        if self.op == "average":
            return (reduce(np.add, inputs) / np.float32(len(inputs))).astype(np.float32)
        if self.op == "maximum":
            return reduce(np.maximum, inputs)
        return reduce(np.minimum, inputs)

    def config(self) -> dict[str, Any]:
        return {"op": self.op, "keras_major": self.keras_major}


class Concatenate(_KerasMerge):
    """Concatenate along a feature axis (``axis`` counts feature axes only, -1 = last)."""

    kind = "concatenate"

    def __init__(self, name: str, *, axis: int, keras_major: int = 3) -> None:
        super().__init__(name, keras_major=keras_major)
        self.axis = axis

    def output_specs(self, inputs: list[TensorSpec]) -> list[TensorSpec]:
        if len(inputs) < 2:
            raise self.refuse(f"needs at least 2 inputs, got {len(inputs)}")
        first = inputs[0]
        for x in inputs:
            last_dim(self, x)
            if x.sequence != first.sequence or len(x.shape) != len(first.shape):
                raise self.refuse(f"cannot join {first.describe()} and {x.describe()}")
        axis = self.axis % len(first.shape)
        for x in inputs:
            if x.shape[:axis] + x.shape[axis + 1 :] != first.shape[:axis] + first.shape[axis + 1 :]:
                raise self.refuse(f"shapes {first.describe()} and {x.describe()} differ off the join axis")
        joined = sum(x.shape[axis] for x in inputs)
        return [TensorSpec((*first.shape[:axis], joined, *first.shape[axis + 1 :]), sequence=first.sequence)]

    def apply(self, inputs: list[FloatArray]) -> FloatArray:
        return np.concatenate(inputs, axis=self.axis)  # a negative feature axis: the same on [B, ...]

    def config(self) -> dict[str, Any]:
        return {"axis": self.axis, "keras_major": self.keras_major}


class Masking(StatelessLayer):
    """Mask a step whose features all equal ``mask_value``; output ``x · mask``, as Keras does."""

    kind = "masking"

    def __init__(self, name: str, *, mask_value: float) -> None:
        super().__init__(name)
        self.mask_value = mask_value

    def output_spec(self, x: TensorSpec) -> TensorSpec:
        last_dim(self, x)
        return x

    def _mask(self, x: FloatArray) -> BoolArray:
        axes = tuple(range(1, x.ndim))
        return np.asarray(np.any(x != np.float32(self.mask_value), axis=axes), dtype=bool)  # (B,)

    def apply(self, inputs: list[FloatArray]) -> FloatArray:
        x = inputs[0]
        keep = self._mask(x).reshape((-1,) + (1,) * (x.ndim - 1))
        return (x * keep).astype(np.float32, copy=False)

    def output_mask(self, inputs: list[FloatArray], mask: BoolArray | None) -> BoolArray | None:
        return self._mask(inputs[0])

    def config(self) -> dict[str, Any]:
        return {"mask_value": self.mask_value}
