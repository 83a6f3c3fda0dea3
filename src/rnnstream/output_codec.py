"""How one model's outputs travel through a store: flattened to one float32 row per stream (and a history
request's whole answer to one row per step).

>>> import numpy as np
>>> codec = Codec([(2,), (1,)])
>>> flat = codec.flatten([np.ones((3, 2)), np.zeros((3, 1))])
>>> flat.shape, [part.shape for part in codec.unflatten(flat[0])]
((3, 3), [(2,), (1,)])
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from rnnstream.types import FloatArray, Outputs


@dataclass
class Codec:
    """How one model's outputs travel through a store: flattened to one float32 row per stream."""

    shapes: list[tuple[int, ...]]
    sizes: list[int] = field(init=False)

    def __post_init__(self) -> None:
        self.sizes = [int(np.prod(shape)) for shape in self.shapes]

    def flatten(self, ys: Outputs) -> FloatArray:
        outputs = ys if isinstance(ys, list) else [ys]
        return np.concatenate([np.asarray(y, np.float32).reshape(len(y), -1) for y in outputs], axis=1)

    def unflatten(self, flat: FloatArray) -> Outputs:
        """One stream's outputs from its row (copied)."""
        parts, start = [], 0
        for shape, size in zip(self.shapes, self.sizes, strict=True):
            parts.append(np.array(flat[start : start + size], np.float32).reshape(shape))
            start += size
        return parts[0] if len(parts) == 1 else parts

    def unflatten_steps(self, flat: FloatArray) -> Outputs:
        """One stream's outputs of T steps from its answer ``flat (T, O)``: per output ``(T, *shape)``."""
        parts, start = [], 0
        for shape, size in zip(self.shapes, self.sizes, strict=True):
            parts.append(np.array(flat[:, start : start + size], np.float32).reshape(len(flat), *shape))
            start += size
        return parts[0] if len(parts) == 1 else parts

    def unflatten_rows(self, flat: FloatArray) -> list[Outputs]:
        """Every stream's outputs from ``flat (n, O)``, which the caller hands over: rows of it, not copies."""
        n, parts, start = len(flat), [], 0
        for shape, size in zip(self.shapes, self.sizes, strict=True):
            parts.append(flat[:, start : start + size].reshape(n, *shape))  # (n, *shape)
            start += size
        if len(parts) == 1:
            return list(parts[0])
        return [list(outputs) for outputs in zip(*parts, strict=True)]
