"""ONNX operators that move axes or compute shapes: Transpose, (Un)Squeeze, Reshape, Slice, Gather, Concat,
Shape, Cast, Constant, ConstantOfShape, Expand.

Exporters surround recurrent operators with them: transposes between ``[B, T, F]`` and ONNX's
``[T, B, F]``, squeezes of the directions axis, and the computation of a zero initial state from the
input's shape (``Shape → Gather/Slice → Concat → ConstantOfShape/Expand``). A shape is followed
symbolically (``"B"``, ``"T"`` and numbers), so a state built this way is provably zeros, which is
where rnnstream starts every stream. ``Gather``/``Slice`` of the last time step gives a
whole-sequence value; any other step, or slicing features, is refused.

>>> sorted(LAYOUT)[:4]
['Cast', 'Concat', 'Constant', 'ConstantOfShape']
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from rnnstream.errors import UnsupportedLayerError
from rnnstream.importers.axes import (
    BATCH,
    FEATURE,
    MERGED,
    TIME,
    UNIT,
    Dim,
    Shape,
    Stack,
    Tensor,
    Zeros,
    axis_name,
)
from rnnstream.importers.onnx_ops import Handler, Op, embedding
from rnnstream.layers.merge import Concatenate

BIG = 2**31 - 1
"""Exporters write "to the end" as a huge ``end`` (INT32_MAX or INT64_MAX)."""


def _dims(op: Op, value: Any) -> tuple[Dim, ...]:
    if isinstance(value, Shape):
        return value.dims
    if isinstance(value, np.ndarray) and value.dtype.kind in "iu":
        return tuple(int(d) for d in value.reshape(-1))
    raise op.refuse("a shape must be a constant or computed from the inputs' shapes")


def _shape_or_const(dims: tuple[Dim, ...], scalar: bool) -> Any:
    """A Shape, or a plain constant once every dim is a number."""
    if all(isinstance(d, int) for d in dims):
        values = np.array(dims, dtype=np.int64)
        return values.reshape(()) if scalar else values
    return Shape(dims, scalar)


def _axes(op: Op, index: int, attr: str) -> list[int] | None:
    """Axes given as an input (newer opsets) or an attribute (older ones)."""
    if len(op.inputs) > index and op.inputs[index] is not None:
        return [int(a) for a in op.const(index, attr).reshape(-1)]
    return [int(a) for a in op.attrs[attr]] if attr in op.attrs else None


def _with(op: Op, fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except UnsupportedLayerError as e:
        raise op.refuse(str(e)) from None


def _shape(op: Op) -> list[Any]:
    value = op.inputs[0]
    if isinstance(value, np.ndarray):
        dims: tuple[Dim, ...] = tuple(int(d) for d in value.shape)
    elif isinstance(value, Tensor):
        dims = op.writer.dims(value)
    elif isinstance(value, Zeros):
        dims = value.dims
    elif isinstance(value, Stack):
        item = op.writer.dims(value.items[0])
        dims = (*item[:value.axis], len(value.items), *item[value.axis:])
    else:
        raise op.refuse("takes the shape of a shape")
    start, end = int(op.attrs.get("start", 0)), op.attrs.get("end")
    return [_shape_or_const(dims[start : None if end is None else int(end)], False)]


def _cast(op: Op) -> list[Any]:
    import onnx

    value, to = op.inputs[0], np.dtype(onnx.helper.tensor_dtype_to_np_dtype(int(op.attrs["to"])))
    if isinstance(value, np.ndarray):
        return [value.astype(to)]
    if isinstance(value, Tensor):
        integer = op.writer.spec(value).dtype == "int64"
        if integer != (to.kind in "iu") or to.kind not in "iuf":
            raise op.refuse(f"casts {'token ids' if integer else 'floats'} to {to}; not supported")
    return [value]


def _constant(op: Op) -> list[Any]:
    from onnx import numpy_helper

    for key in ("value", "value_float", "value_floats", "value_int", "value_ints"):
        if key in op.attrs:
            value = op.attrs[key]
            return [numpy_helper.to_array(value) if hasattr(value, "dims") else np.array(value)]
    raise op.refuse(f"holds {sorted(op.attrs)}; only numeric constants are read")


def _constant_of_shape(op: Op) -> list[Any]:
    from onnx import numpy_helper

    fill = numpy_helper.to_array(op.attrs["value"]) if "value" in op.attrs else np.zeros(1, np.float32)
    dims = _dims(op, op.inputs[0])
    if not np.any(fill):
        return [Zeros(dims)]
    if all(isinstance(d, int) for d in dims):
        return [np.full([int(d) for d in dims], fill.reshape(-1)[0], dtype=fill.dtype)]
    raise op.refuse(f"fills a tensor of shape {dims} with {fill.reshape(-1)[0]}; only zeros (initial states) are read")


def _expand(op: Op) -> list[Any]:
    value, dims = op.inputs[0], _dims(op, op.inputs[1])
    if (isinstance(value, np.ndarray) and not np.any(value)) or isinstance(value, Zeros):
        return [Zeros(dims)]
    if isinstance(value, np.ndarray) and all(isinstance(d, int) for d in dims):
        return [value * np.ones([int(d) for d in dims], value.dtype)]
    raise op.refuse("expands a tensor along the batch or time; only zeros (an initial state) are read")


def _transpose(op: Op) -> list[Any]:
    value = op.inputs[0]
    rank = len(value.axes) if isinstance(value, Tensor) else len(value.dims) if isinstance(value, Zeros) else None
    if isinstance(value, np.ndarray):
        return [np.transpose(value, op.attrs.get("perm"))]
    if rank is None:
        raise op.refuse("transposes a stack of states or a shape; not supported")
    perm = tuple(int(p) for p in op.attrs.get("perm", range(rank - 1, -1, -1)))
    if isinstance(value, Zeros):
        return [Zeros(tuple(value.dims[p] for p in perm))]
    return [_with(op, value.permuted, perm)]


def _squeeze(op: Op) -> list[Any]:
    value, axes = op.inputs[0], _axes(op, 1, "axes")
    if isinstance(value, np.ndarray):
        return [np.squeeze(value, axis=None if axes is None else tuple(axes))]
    if isinstance(value, Shape) and len(value.dims) == 1 and axes in (None, [0], [-1]):
        return [Shape(value.dims, True)]
    if axes is None:
        raise op.refuse("squeezes every axis of size 1, which could include a batch of one stream; give the axes")
    if isinstance(value, Zeros):
        rank = len(value.dims)
        return [Zeros(tuple(d for i, d in enumerate(value.dims) if i not in {a % rank for a in axes}))]
    if isinstance(value, Stack) and len(value.items) == 1 and [a % (len(value.items[0].axes) + 1) for a in axes] == [
        value.axis
    ]:
        return [value.items[0]]
    if not isinstance(value, Tensor):
        raise op.refuse("squeezes a stack of states; index one layer first")
    for axis in sorted((value.axis(a) for a in axes), reverse=True):
        value = _with(op, value.without, axis)
    return [value]


def _unsqueeze(op: Op) -> list[Any]:
    value, axes = op.inputs[0], _axes(op, 1, "axes")
    if axes is None:
        raise op.refuse("has no axes")
    if isinstance(value, np.ndarray):
        return [np.expand_dims(value, tuple(axes))]
    if isinstance(value, Shape) and value.scalar and axes in ([0], [-1]):
        return [Shape(value.dims, False)]
    rank = (len(value.axes) if isinstance(value, Tensor) else len(value.dims) if isinstance(value, Zeros) else -1)
    if rank < 0:
        raise op.refuse("unsqueezes a stack of states or a shape vector; not supported")
    for axis in sorted(a % (rank + 1 + len(axes) - 1) for a in axes):
        if isinstance(value, Zeros):
            value = Zeros((*value.dims[:axis], 1, *value.dims[axis:]))
        else:
            value = _with(op, value.with_unit, axis)
    return [value]


def _reshape(op: Op) -> list[Any]:
    value, target = op.inputs[0], _dims(op, op.inputs[1])
    if isinstance(value, np.ndarray) and all(isinstance(d, int) for d in target):
        dims = [int(value.shape[i]) if d == 0 else int(d) for i, d in enumerate(target)]
        return [value.reshape(dims)]
    if isinstance(value, Shape) and len(target) == 1:
        return [Shape(value.dims, False)]
    if isinstance(value, Zeros) and -1 not in target:
        return [Zeros(tuple(value.dims[i] if d == 0 else d for i, d in enumerate(target)))]
    if not isinstance(value, Tensor):
        raise op.refuse(f"reshapes a {type(value).__name__} to {target}; not supported")
    if op.attrs.get("allowzero", 0) and 0 in target:
        raise op.refuse("allowzero=1 with a 0 in the shape makes an empty tensor")
    shape = op.writer.dims(value)
    entries: list[tuple[str, Any]] = []
    for i, d in enumerate(target):
        if d == 0:
            entries.append((value.axes[i], shape[i]))
        elif isinstance(d, str):
            entries.append((d, d))
        else:
            entries.append(("?" if d == -1 else "n", d))
    atoms = [(a, s) for tag, s in zip(value.axes, shape, strict=True) for a in _atoms(tag) if a != UNIT]
    pairs = [(f"{a}*{b}", None) for (a, _), (b, _) in itertools.pairwise(atoms) if {a, b} == {BATCH, TIME}]
    for guess in [(UNIT, 1), *atoms, *pairs]:
        axes = _align([guess if kind == "?" else (kind, d) for kind, d in entries], atoms)
        if axes is not None:
            return [Tensor(value.tensor, axes)]
    raise op.refuse(
        f"reshapes {value.describe()} (sizes {shape}) to {target}: only adding or removing axes of size 1, and "
        "flattening batch and time together (or back), is read; features stay as they are"
    )


def _atoms(tag: str) -> list[str]:
    """A merged axis as the axes it flattens; any other axis as itself."""
    return tag.split("*") if tag in MERGED else [tag]


def _align(entries: list[tuple[str, Any]], atoms: list[tuple[str, Any]]) -> tuple[str, ...] | None:
    """The axes of a reshape's result, if it only adds or removes unit axes of the input and merges or
    splits batch and time; ``atoms`` are the input's non-unit axes with merged ones split."""
    axes, j = [], 0
    for kind, size in entries:
        parts = _atoms(kind) if kind in MERGED else [kind]
        if kind in (BATCH, TIME, *MERGED) and [a for a, _ in atoms[j : j + len(parts)]] == parts:
            axes.append(kind)
            j += len(parts)
        elif kind in ("n", FEATURE) and j < len(atoms) and atoms[j] == (FEATURE, size):
            axes.append(FEATURE)
            j += 1
        elif size == 1 and kind in ("n", UNIT):
            axes.append(UNIT)
        else:
            return None
    return tuple(axes) if j == len(atoms) else None


def _indices(op: Op, index: int) -> np.ndarray[Any, Any]:
    return op.const(index, "the indices").astype(np.int64)


def _gather(op: Op) -> list[Any]:
    data, idx = op.inputs[0], op.inputs[1]
    axis = int(op.attrs.get("axis", 0))
    if isinstance(data, np.ndarray) and isinstance(idx, np.ndarray):
        return [np.take(data, idx, axis=axis)]
    if isinstance(data, np.ndarray):
        return embedding(op)
    indices = _indices(op, 1)
    if isinstance(data, Shape):
        picked = tuple(data.dims[int(i)] for i in indices.reshape(-1))
        return [_shape_or_const(picked, indices.ndim == 0)]
    if indices.size != 1:
        raise op.refuse(f"gathers {indices.size} entries; only one step, layer or unit entry is read")
    i = int(indices.reshape(-1)[0])
    if isinstance(data, Stack):
        if axis % (len(data.items[0].axes) + 1) != data.axis or not -len(data.items) <= i < len(data.items):
            raise op.refuse(f"gathers {i} along axis {axis} of a stack of {len(data.items)} states")
        item = data.items[i]
        return [item if indices.ndim == 0 else item.with_unit(data.axis)]
    x = op.tensor(0)
    position = x.axis(axis)
    return [_take(op, x, position, i, keep=indices.ndim > 0)]


def _take(op: Op, x: Tensor, position: int, i: int, keep: bool) -> Tensor:
    tag = x.axes[position]
    if tag == TIME and i == -1:
        return op.writer.last_step(op.layer_name(), x, position, keep=keep)
    if tag == UNIT and i in (0, -1):
        return x if keep else x.without(position)
    if tag == TIME:
        raise op.refuse(f"takes time step {i} of {x.describe()}: a stream only knows the steps so far, so only the "
                        "last step (-1) can stream")  # fmt: skip
    raise op.refuse(f"indexes {axis_name(tag)} of {x.describe()} (entry {i}); not supported")


def _slice(op: Op) -> list[Any]:
    data = op.inputs[0]
    if op.opset >= 10:
        starts, ends = _indices(op, 1).tolist(), _indices(op, 2).tolist()
        axes = _axes(op, 3, "axes") or list(range(len(starts)))
        steps = _indices(op, 4).tolist() if len(op.inputs) > 4 and op.inputs[4] is not None else [1] * len(starts)
    else:
        starts, ends = list(op.attrs["starts"]), list(op.attrs["ends"])
        axes, steps = list(op.attrs.get("axes", range(len(starts)))), [1] * len(starts)
    cuts = list(zip(axes, starts, ends, steps, strict=True))
    if isinstance(data, np.ndarray):
        index = [slice(None)] * data.ndim
        for a, s, e, st in cuts:
            index[a] = slice(s, e, st)
        return [data[tuple(index)]]
    if isinstance(data, Shape | Zeros):
        dims = list(data.dims)
        for a, s, e, st in cuts:
            dims = _slice_dims(op, dims, a, s, e, st, isinstance(data, Shape))
        return [_shape_or_const(tuple(dims), False) if isinstance(data, Shape) else Zeros(tuple(dims))]
    if isinstance(data, Stack):
        if len(cuts) != 1 or cuts[0][0] % (len(data.items[0].axes) + 1) != data.axis or cuts[0][3] != 1:
            raise op.refuse("slices a stack of states other than along the stack")
        items = data.items[slice(cuts[0][1], cuts[0][2])]
        return [items[0].with_unit(data.axis) if len(items) == 1 else Stack(items, data.axis)]
    x = op.tensor(0)
    for a, s, e, st in sorted(cuts, key=lambda c: -x.axis(c[0])):
        position = x.axis(a)
        tag = x.axes[position]
        if st == 1 and ((s == 0 and e >= BIG) or (tag == UNIT and s in (0, -1) and e >= 1)):
            continue
        if st == 1 and tag == TIME and s == -1 and e >= BIG:
            x = op.writer.last_step(op.layer_name(), x, position, keep=True)
            continue
        raise op.refuse(f"slices {s}:{e}:{st} of {axis_name(x.axes[position])} of {x.describe()}; only the last "
                        "time step (-1:) is read")  # fmt: skip
    return [x]


def _slice_dims(op: Op, dims: list[Dim], a: int, s: int, e: int, st: int, shape: bool) -> list[Dim]:
    if shape:  # slicing a shape vector picks dims
        return dims[slice(s, e, st)]
    d = dims[a]
    if isinstance(d, int):
        dims[a] = len(range(*slice(s, e, st).indices(d)))
    elif not (s == 0 and e >= BIG and st == 1):
        raise op.refuse(f"slices {s}:{e} of a zero tensor along {d}")
    return dims


def _concat(op: Op) -> list[Any]:
    values, axis = op.inputs, int(op.attrs["axis"])
    if all(isinstance(v, np.ndarray) for v in values):
        return [np.concatenate(values, axis=axis)]
    if all(isinstance(v, Shape | np.ndarray) for v in values):
        return [_shape_or_const(tuple(d for v in values for d in _dims(op, v)), False)]
    if all(isinstance(v, Tensor | Stack) for v in values):
        return [_join(op, values, axis)]
    raise op.refuse("joins tensors of the model with constants or zeros; not supported")


def _join(op: Op, values: list[Any], axis: int) -> Any:
    tensors = [v for v in values if isinstance(v, Tensor)]
    stacks = [v for v in values if isinstance(v, Stack)]
    rank = len(tensors[0].axes) if tensors else len(stacks[0].items[0].axes) + 1
    position = axis % rank
    if stacks or tensors[0].axes[position] == UNIT:  # whole-sequence states gathered on a new axis
        items: list[Tensor] = []
        for v in values:
            if isinstance(v, Stack):
                if v.axis != position:
                    raise op.refuse("joins stacks of states along different axes")
                items += v.items
            else:
                items.append(_with(op, v.without, position))
        if len({i.axes for i in items}) > 1:
            raise op.refuse("stacks states laid out differently")
        return Stack(tuple(items), position)
    if len({t.axes for t in tensors}) > 1:
        raise op.refuse(f"joins tensors laid out differently: {[t.describe() for t in tensors]}")
    feature = tensors[0].feature_axis(position)
    if feature is None:
        raise op.refuse(f"joins along {axis_name(tensors[0].axes[position])}; only features can join")
    if len(tensors) == 1:
        return tensors[0]
    (y,) = op.add(Concatenate(op.layer_name(), axis=feature, keras_major=3), tensors)
    return Tensor(y, tensors[0].axes)


LAYOUT: dict[str, Handler] = {
    "Shape": _shape, "Cast": _cast, "Constant": _constant, "ConstantOfShape": _constant_of_shape,
    "Expand": _expand, "Transpose": _transpose, "Squeeze": _squeeze, "Unsqueeze": _unsqueeze,
    "Reshape": _reshape, "Gather": _gather, "Slice": _slice, "Concat": _concat,
}  # fmt: skip
