"""Reshape and Permute of a step's feature axes; the batch (and time) axis never moves.

A step is ``[B, *features]``: Keras' ``Reshape((-1, 2, 3))`` of a sequence ``(B, T, 6)`` and its
``Reshape((2, 3))`` of a whole-sequence value ``(B, 6)`` are both ``features (6,) → (2, 3)`` here, and
``Permute((1, 3, 2))`` of ``(B, T, 2, 3)`` swaps the two feature axes. Neither passes a Keras mask on
(Keras' Reshape and Permute do not support masking).

>>> import numpy as np
>>> from rnnstream.layers.layer import TensorSpec
>>> Reshape("r", shape=(2, 3)).output_spec(TensorSpec((6,))).describe()
'(B, T, 2, 3)'
>>> Permute("p", perm=(1, 0)).apply([np.arange(6, dtype=np.float32).reshape(1, 2, 3)]).shape
(1, 3, 2)
"""

from __future__ import annotations

from math import prod
from typing import Any

import numpy as np

from rnnstream.layers.layer import StatelessLayer, TensorSpec
from rnnstream.types import BoolArray, FloatArray, Shape


class Reshape(StatelessLayer):
    """``x [B, *features] → [B, *shape]``, in C order (as NumPy and every framework reshape)."""

    kind = "reshape"

    def __init__(self, name: str, *, shape: Shape) -> None:
        super().__init__(name)
        self.shape = tuple(int(d) for d in shape)

    def output_spec(self, x: TensorSpec) -> TensorSpec:
        if prod(x.shape) != prod(self.shape):
            raise self.refuse(
                f"cannot reshape the {prod(x.shape)} features of {x.describe()} into {self.shape}"
            )
        return TensorSpec(self.shape, dtype=x.dtype, sequence=x.sequence)

    def apply(self, inputs: list[FloatArray]) -> FloatArray:
        x = inputs[0]
        return x.reshape(x.shape[0], *self.shape)  # (B, *shape)

    def output_mask(self, inputs: list[FloatArray], mask: BoolArray | None) -> BoolArray | None:
        return None

    def config(self) -> dict[str, Any]:
        return {"shape": self.shape}


class Permute(StatelessLayer):
    """Transpose the feature axes: output feature axis ``i`` is input feature axis ``perm[i]``."""

    kind = "permute"

    def __init__(self, name: str, *, perm: tuple[int, ...]) -> None:
        super().__init__(name)
        self.perm = tuple(int(p) for p in perm)

    def output_spec(self, x: TensorSpec) -> TensorSpec:
        if sorted(self.perm) != list(range(len(x.shape))):
            raise self.refuse(f"permutation {self.perm} does not fit the feature axes of {x.describe()}")
        return TensorSpec(tuple(x.shape[p] for p in self.perm), dtype=x.dtype, sequence=x.sequence)

    def apply(self, inputs: list[FloatArray]) -> FloatArray:
        return np.transpose(inputs[0], (0, *(p + 1 for p in self.perm)))  # (B, *permuted features)

    def output_mask(self, inputs: list[FloatArray], mask: BoolArray | None) -> BoolArray | None:
        return None

    def config(self) -> dict[str, Any]:
        return {"perm": self.perm}
