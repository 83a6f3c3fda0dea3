"""What a Keras layer builder is given: :class:`LayerContext`, and the helpers every builder shares."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from rnnstream.errors import ModelFileError, UnsupportedLayerError
from rnnstream.layers.layer import Layer, TensorSpec
from rnnstream.types import Array, FloatArray


@dataclass(frozen=True)
class LayerContext:
    """What a builder needs besides the config: the weights, the input specs, the writer's Keras major."""

    name: str
    class_name: str
    config: dict[str, Any]
    weights: list[Array]
    inputs: list[TensorSpec]
    keras_major: int
    module: str = ""
    """The module a Keras 3 config names (``keras.layers`` for built-ins); empty in legacy configs."""

    def take(self, *expected: tuple[str, tuple[int | None, ...]]) -> list[FloatArray]:
        """Check the weights against ``(name, shape)`` pairs (None = any size) and return them as float32."""
        names = ", ".join(name for name, _ in expected)
        if len(self.weights) != len(expected):
            raise ModelFileError(
                f"layer {self.name!r} ({self.class_name}) should have {len(expected)} weights ({names}); "
                f"the file has {len(self.weights)}"
            )
        taken = []
        for (wname, shape), array in zip(expected, self.weights, strict=True):
            fits = len(array.shape) == len(shape) and all(
                e is None or e == a for e, a in zip(shape, array.shape, strict=True)
            )
            if not fits:
                wanted = "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"
                raise ModelFileError(
                    f"layer {self.name!r} ({self.class_name}): weight {wname!r} has shape {tuple(array.shape)}, "
                    f"expected {wanted}"
                )
            taken.append(np.ascontiguousarray(array, dtype=np.float32))
        return taken

    def feature_axis(self, axis: int) -> int:
        """Map a Keras axis of the full tensor (batch, [time,] features…) to a feature axis (negative)."""
        x = self.inputs[0]
        lead = 2 if x.sequence else 1
        rank = lead + len(x.shape)
        full = axis if axis < 0 else axis - rank
        if not -len(x.shape) <= full < 0:
            raise UnsupportedLayerError(
                f"layer {self.name!r} ({self.class_name}) works along axis {axis} of {x.describe()}, "
                "the batch or time axis: only feature axes can stream"
            )
        return full

    def refuse(self, why: str) -> UnsupportedLayerError:
        return UnsupportedLayerError(f"layer {self.name!r} ({self.class_name}): {why}")


Builder = Callable[[LayerContext], Layer]


def activation_name(value: Any) -> str:
    if value is None:
        return "linear"
    if isinstance(value, dict):  # a serialised function: {"class_name": "function", "config": "tanh", ...}
        inner = value.get("config")
        if isinstance(inner, str):
            return inner
        raise UnsupportedLayerError(f"activation {value!r} is not a built-in activation name")
    return str(value)


def first(value: Any) -> Any:
    return value[0] if isinstance(value, list | tuple) else value
