"""A slice of a step's feature axes and a reduction over feature axes (tf.keras 2's TF-op nodes
``h[..., :3]`` and ``tf.reduce_mean(h, axis=-1)`` are read as these).

Both work on one step ``[B, *features]``; axes are feature axes, counted from the end (negative).

>>> import numpy as np
>>> from rnnstream.layers.layer import TensorSpec
>>> FeatureSlice("s", index=((None, 3, None),)).output_spec(TensorSpec((8,))).describe()
'(B, T, 3)'
>>> FeatureReduce("r", op="mean", axes=(-1,), keepdims=False).apply([np.float32([[1.0, 3.0]])])
array([2.], dtype=float32)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from rnnstream.layers.layer import StatelessLayer, TensorSpec, float_input
from rnnstream.types import BoolArray, FloatArray

Index = int | tuple[int | None, int | None, int | None]
"""One feature axis of a slice: an index (the axis goes) or ``(start, stop, step)``."""

REDUCTIONS: dict[str, Callable[..., Any]] = {"mean": np.mean, "sum": np.sum, "max": np.max, "min": np.min}


class FeatureSlice(StatelessLayer):
    """``x[:, *index]``: one entry per leading feature axis (later axes are kept whole)."""

    kind = "feature_slice"

    def __init__(self, name: str, *, index: tuple[Index, ...]) -> None:
        super().__init__(name)
        self.index = index

    def _key(self) -> tuple[Any, ...]:
        return (slice(None), *(i if isinstance(i, int) else slice(*i) for i in self.index))

    def output_spec(self, x: TensorSpec) -> TensorSpec:
        if len(self.index) > len(x.shape):
            raise self.refuse(f"slices {len(self.index)} feature axes of {x.describe()}")
        try:
            shape = np.empty((1, *x.shape), dtype=np.int8)[self._key()].shape[1:]  # (1, *sliced features)
        except IndexError as error:
            raise self.refuse(f"cannot slice {x.describe()}: {error}") from None
        if 0 in shape:
            raise self.refuse(f"the slice leaves no values of {x.describe()}")
        return TensorSpec(tuple(shape), dtype=x.dtype, sequence=x.sequence)

    def apply(self, inputs: list[FloatArray]) -> FloatArray:
        return np.ascontiguousarray(inputs[0][self._key()])  # (B, *sliced features)

    def output_mask(self, inputs: list[FloatArray], mask: BoolArray | None) -> BoolArray | None:
        return None

    def config(self) -> dict[str, Any]:
        return {"index": self.index}


class FeatureReduce(StatelessLayer):
    """``mean`` / ``sum`` / ``max`` / ``min`` over feature axes, in float32 as TensorFlow computes it."""

    kind = "feature_reduce"

    def __init__(self, name: str, *, op: str, axes: tuple[int, ...], keepdims: bool) -> None:
        super().__init__(name)
        if op not in REDUCTIONS:
            raise self.refuse(f"unknown reduction {op!r}; known: {', '.join(REDUCTIONS)}")
        self.op, self.axes, self.keepdims = op, axes, keepdims

    def output_spec(self, x: TensorSpec) -> TensorSpec:
        float_input(self, x)
        if any(not -len(x.shape) <= a < 0 for a in self.axes):
            raise self.refuse(f"axes {self.axes} are not feature axes of {x.describe()}")
        axes = {a % len(x.shape) for a in self.axes}
        shape = tuple(1 if i in axes else d for i, d in enumerate(x.shape) if self.keepdims or i not in axes)
        return TensorSpec(shape, sequence=x.sequence)

    def apply(self, inputs: list[FloatArray]) -> FloatArray:
        y = REDUCTIONS[self.op](inputs[0], axis=self.axes, keepdims=self.keepdims)  # (B, *kept features)
        return np.asarray(y, dtype=np.float32)

    def output_mask(self, inputs: list[FloatArray], mask: BoolArray | None) -> BoolArray | None:
        return None

    def config(self) -> dict[str, Any]:
        return {"op": self.op, "axes": self.axes, "keepdims": self.keepdims}
