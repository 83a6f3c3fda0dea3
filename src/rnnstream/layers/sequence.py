"""LastStep: the last step of a sequence, as a whole-sequence value.

PyTorch's ``out[:, -1]`` and ONNX's ``Gather(Y, -1)`` take the last step of a sequence output. At
each step of a stream, the value "as if the sequence ended here" is this step's value, so the layer
passes its input through; only what the tensor *is* changes (``TensorSpec.sequence`` becomes False,
as for a Keras RNN with ``return_sequences=False``), so a recurrent layer can no longer be fed it.

>>> import numpy as np
>>> from rnnstream.layers.layer import TensorSpec
>>> last = LastStep("last")
>>> last.output_spec(TensorSpec((3,))).describe(), last.apply([np.ones((2, 3), np.float32)]).shape
('(B, 3)', (2, 3))
"""

from __future__ import annotations

from rnnstream.layers.layer import StatelessLayer, TensorSpec
from rnnstream.types import FloatArray


class LastStep(StatelessLayer):
    """Identity on values; turns a per-step sequence into a whole-sequence value."""

    kind = "last_step"

    def output_spec(self, x: TensorSpec) -> TensorSpec:
        if not x.sequence:
            raise self.refuse(f"takes the last step of a sequence, but is fed a whole-sequence value {x.describe()}")
        return TensorSpec(x.shape, dtype=x.dtype, sequence=False)

    def apply(self, inputs: list[FloatArray]) -> FloatArray:
        return inputs[0]
