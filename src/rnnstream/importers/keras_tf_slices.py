"""tf.keras 2's ``h[...]`` (``SlicingOpLambda``) and ``tf.reshape`` nodes → canonical layers.

A step is ``[B, *features]``. Slicing streams when it keeps the batch whole and, on a sequence, either
keeps the time axis whole or takes its last step (``h[:, -1]``: at each step of a stream, the last
step so far is the current one); feature axes may be indexed and sliced freely. ``tf.reshape`` with a
constant shape streams on a whole-sequence value ``(B, *features)`` whose batch axis stays ``-1``.
"""

from __future__ import annotations

from math import prod
from typing import Any

from rnnstream.importers.keras_context import LayerContext
from rnnstream.importers.keras_tf_call import TensorArg, TFCall
from rnnstream.layers.dense import Identity
from rnnstream.layers.features import FeatureSlice, Index
from rnnstream.layers.layer import Layer
from rnnstream.layers.reshape import Reshape
from rnnstream.layers.sequence import LastStep

_WHOLE = (None, None, None)


def _entry(ctx: LayerContext, item: Any) -> Index | None:
    """One axis of a slice spec: an index, ``(start, stop, step)``, or None for an ellipsis."""
    if item is Ellipsis or (isinstance(item, dict) and item.get("class_name") == "__ellipsis__"):
        return None
    if isinstance(item, slice):  # a live model's call, not yet serialised
        item = {"start": item.start, "stop": item.stop, "step": item.step}
    if isinstance(item, int) and not isinstance(item, bool):
        return item
    if isinstance(item, dict) and set(item) == {"start", "stop", "step"}:
        parts = (item["start"], item["stop"], item["step"])
        if all(p is None or (isinstance(p, int) and not isinstance(p, bool)) for p in parts):
            return (parts[0], parts[1], None if parts[2] == 1 else parts[2])
    raise ctx.refuse(f"slice entry {item!r} is not supported: rnnstream reads integer indices, slices and '...'")


def _axes(ctx: LayerContext, spec: Any) -> list[Index]:
    """The slice spec with its ellipsis expanded: one entry per axis of the full tensor."""
    x = ctx.inputs[0]
    rank = (2 if x.sequence else 1) + len(x.shape)
    entries = [_entry(ctx, item) for item in (spec if isinstance(spec, list | tuple) else [spec])]
    if entries.count(None) > 1 or len(entries) - entries.count(None) > rank:
        raise ctx.refuse(f"slice {spec!r} does not fit {x.describe()}")
    fill: list[Index] = [_WHOLE] * (rank - len(entries) + entries.count(None))
    at = entries.index(None) if None in entries else len(entries)
    return [e for e in entries[:at] if e is not None] + fill + [e for e in entries[at + 1 :] if e is not None]


def _describe(index: Index) -> str:
    if isinstance(index, int):
        return str(index)
    start, stop, step = ("" if p is None else str(p) for p in index)
    return f"{start}:{stop}" + (f":{step}" if step else "")


def build_getitem(ctx: LayerContext, call: TFCall) -> list[Layer]:
    """``h[:, -1, ...]`` → LastStep (+ a feature slice); ``h[..., a:b]`` → a feature slice."""
    if not isinstance(call.first, TensorArg) or "slice_spec" not in call.kwargs:
        raise ctx.refuse("slices something that is not a tensor of the graph")
    axes = _axes(ctx, call.arg(ctx, "slice_spec"))
    if axes[0] != _WHOLE:
        raise ctx.refuse(f"selects {_describe(axes[0])} of the batch axis; every stream of a batch is independent, "
                         "so only [:] can stream")
    layers: list[Layer] = []
    if ctx.inputs[0].sequence:
        time = axes[1]
        if time == -1:
            layers.append(LastStep(f"{ctx.name}/last_step"))
        elif time != _WHOLE:
            raise ctx.refuse(
                f"selects {_describe(time)} of the time axis: at step t a stream knows steps up to t only, so "
                "just the whole axis (:) or the last step (-1, the current one) can stream"
            )
        axes = axes[1:]
    features = axes[1:]
    while features and features[-1] == _WHOLE:
        features.pop()
    if features:
        layers.append(FeatureSlice(ctx.name if not layers else f"{ctx.name}/features", index=tuple(features)))
    return layers or [Identity(ctx.name)]


def build_reshape(ctx: LayerContext, call: TFCall) -> Layer:
    """``tf.reshape(v, [-1, *features])`` of a whole-sequence value ``v`` (B, *features)."""
    x = ctx.inputs[0]
    shape = call.arg(ctx, "shape")
    if not isinstance(shape, list) or any(isinstance(d, TensorArg) for d in shape):
        raise ctx.refuse(f"shape {shape!r} is not a list of numbers; only a constant shape can be read")
    if x.sequence:
        raise ctx.refuse(
            f"tf.reshape of the sequence {x.describe()} to the constant shape {tuple(shape)} fixes the time length "
            "or folds time into the batch; reshape feature axes with keras.layers.Reshape((-1, ...)) instead"
        )
    target = [int(d) for d in shape]
    if not target or target[0] != -1:
        raise ctx.refuse(f"shape {tuple(target)} fixes the batch size; write the batch axis as -1")
    features, size = target[1:], prod(x.shape)
    known = prod(d for d in features if d != -1)
    if features.count(-1) > 1 or known == 0 or size % known or (-1 not in features and known != size):
        raise ctx.refuse(f"shape {tuple(target)} does not hold the {size} values of {x.describe()}")
    return Reshape(ctx.name, shape=tuple(size // known if d == -1 else d for d in features))
