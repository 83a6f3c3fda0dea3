"""Type aliases shared across the package."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.floating[Any]]
"""A float array (float32 in practice): activations, weights, state rows."""

IntArray = npt.NDArray[np.int64]
"""Token ids."""

BoolArray = npt.NDArray[np.bool_]
"""A per-stream mask: True where the step is real, False where it is masked."""

Array = npt.NDArray[Any]
"""Any array a caller hands us, before it is validated."""

Shape = tuple[int, ...]
"""A feature shape: the shape of one stream's value at one step (no batch, no time axis)."""

Inputs = Array | Sequence[Any] | Mapping[str, Any]
"""A step's (or a sequence's) inputs: one array for a single-input model; a list (in input order) or a dict
(by input name) otherwise."""

Outputs = FloatArray | list[FloatArray]
"""One array for a single-output model; a list in output order otherwise."""
