"""The glue of a traced ``forward``: functions and methods → canonical layers, through two explicit tables.

Indexing (``out[:, -1]``, ``h_n[-1]``, tuple items), residual adds and other arithmetic,
concatenation, transposes of batch and time, squeezes and reshapes of features
(:mod:`~rnnstream.importers.torch_reshape`), ``F.linear`` / ``F.layer_norm`` on the module's own tensors, activations
(:mod:`~rnnstream.importers.torch_activations`), and the zeros that ``forward`` may build for an
initial state (``torch.zeros(layers, x.size(0), hidden)``). What needs the future of a sequence
(reversal, pooling over time, a fixed time step) is refused with the reason.

>>> import operator
>>> operator.getitem in FUNCTIONS, "transpose" in METHODS
(True, True)
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np
import torch
import torch.fx
from torch.nn import functional as nnf

from rnnstream.errors import UnsupportedLayerError
from rnnstream.importers import torch_reduce as reductions
from rnnstream.importers.axes import BATCH, TIME, UNIT, Dim, Shape, Stack, Tensor, Zeros
from rnnstream.importers.causal_padding import TimePadded, Unchomped
from rnnstream.importers.torch_activations import ACTIVATION_METHODS, ACTIVATIONS
from rnnstream.importers.torch_call import Call, Handler, Meta, describe
from rnnstream.importers.torch_conv import chomp, f_pad, zero_concat
from rnnstream.importers.torch_layers import FUNCTIONAL
from rnnstream.importers.torch_reduce import NEEDS_FUTURE
from rnnstream.importers.torch_reshape import flatten, reshape, squeeze, unsqueeze
from rnnstream.layers.elementwise import ConstantOp
from rnnstream.layers.merge import Concatenate, Merge

# -- arithmetic and joins --------------------------------------------------------------------------

_MERGES = {"add": "add", "sub": "subtract", "mul": "multiply"}


def _arith(op: str) -> Handler:
    def handle(call: Call) -> Tensor:
        a, b = call.args[0], call.arg(1, "other")
        if float(call.kwargs.get("alpha", 1)) != 1:
            raise call.refuse("alpha != 1 is not supported")
        if isinstance(a, Tensor) and isinstance(b, Tensor):
            return _two_tensors(call, op, a, b)
        for x, c, reverse in ((a, b, False), (b, a, True)):
            if isinstance(x, Tensor) and isinstance(c, int | float) and not isinstance(c, bool):
                kind = ("r" + op) if reverse and op in ("sub", "div") else op
                (y,) = call.add(ConstantOp(call.layer_name(), op=kind, constant=np.array(c, np.float32)), [x])
                return Tensor(y, x.axes)
        other = b if isinstance(a, Tensor) else a
        raise call.refuse(f"{op} with {describe(other)} is not supported (only tensors of the model and numbers)")

    return handle


def _two_tensors(call: Call, op: str, a: Tensor, b: Tensor) -> Tensor:
    """``a ∘ b`` of two tensors of the model: one elementwise Merge, which takes operands of one layout and shape."""
    if op not in _MERGES:
        raise call.refuse(
            f"{op} of two tensors of the model is not supported: rnnstream's elementwise merge adds, subtracts and "
            "multiplies"
        )
    sizes = (call.writer.dims(a), call.writer.dims(b))
    if any({p, q} == {TIME, UNIT} for p, q in zip(a.axes, b.axes, strict=False)):
        raise call.refuse(
            f"{op} of {a.describe()} and {b.describe()} broadcasts one time step over the whole sequence: every step "
            "would need that step (the last one) before it has arrived"
        )
    if a.axes != b.axes or sizes[0] != sizes[1]:
        raise call.refuse(
            f"{op} of {a.describe()} (sizes {sizes[0]}) and {b.describe()} (sizes {sizes[1]}): broadcasting between "
            "two tensors of the model is not supported (rnnstream's elementwise merge takes operands of one layout "
            "and shape); give both the same shape, e.g. a gate of H units rather than 1"
        )
    (y,) = call.add(Merge(call.layer_name(), op=_MERGES[op], keras_major=3), [a, b])
    return Tensor(y, a.axes)


def _cat(call: Call) -> Tensor | TimePadded:
    items, dim = list(call.args[0]), int(call.arg(1, "dim", 0))
    if any(isinstance(t, Zeros | TimePadded) for t in items):
        return zero_concat(call, items, dim)  # zeros before a Conv1d: its causal padding
    parts = [call.tensor(t, "inputs") for t in items]
    if len({p.axes for p in parts}) > 1:
        raise call.refuse(f"joins tensors laid out differently: {[p.describe() for p in parts]}")
    axis = parts[0].feature_axis(dim)
    if axis is None:
        tag = parts[0].axes[parts[0].axis(dim)]
        where = "time" if tag == TIME else "the batch" if tag == BATCH else "a unit axis"
        raise call.refuse(f"concatenates along {where} (dim={dim} of {parts[0].describe()}); only features can join")
    if len(parts) == 1:
        return parts[0]
    (y,) = call.add(Concatenate(call.layer_name(), axis=axis, keras_major=3), parts)
    return Tensor(y, parts[0].axes)


# -- indexing and layout ---------------------------------------------------------------------------


def _getitem(call: Call) -> Any:
    value, index = call.args
    if isinstance(value, tuple | list):
        return value[index]
    if isinstance(value, Shape) and not value.scalar:
        picked = value.dims[index]
        return Shape(tuple(picked), False) if isinstance(index, slice) else Shape((picked,), True)
    if isinstance(value, Stack):
        first = index[0] if isinstance(index, tuple) else index
        rest = index[1:] if isinstance(index, tuple) else ()
        if not isinstance(first, int) or any(r != slice(None) for r in rest):
            raise call.refuse(f"indexes the stacked states with {index!r}; pick one layer, e.g. h_n[-1]")
        if not -len(value.items) <= first < len(value.items):
            raise call.refuse(f"layer {first} is out of range for {len(value.items)} stacked states")
        return value.items[first]
    if isinstance(value, Unchomped):
        return chomp(call, value, index)
    return _index(call, call.tensor(value), index)


def _index(call: Call, x: Tensor, index: Any) -> Tensor:
    items = index if isinstance(index, tuple) else (index,)
    if any(i is None for i in items) or sum(i is Ellipsis for i in items) > 1:
        raise call.refuse(f"index {index!r} adds axes; use unsqueeze")
    if any(i is Ellipsis for i in items):
        k = next(n for n, i in enumerate(items) if i is Ellipsis)
        items = items[:k] + (slice(None),) * (len(x.axes) - len(items) + 1) + items[k + 1 :]
    if len(items) > len(x.axes):
        raise call.refuse(f"index {index!r} has more entries than {x.describe()} has axes")
    items = items + (slice(None),) * (len(x.axes) - len(items))
    result = x
    for axis in reversed(range(len(items))):  # from the last axis, so earlier positions stay put
        item, tag = items[axis], x.axes[axis]
        integer = isinstance(item, int) and not isinstance(item, bool)
        if isinstance(item, slice) and item == slice(None):
            continue
        if tag == TIME and integer and item == -1:
            result = call.writer.last_step(call.layer_name(), result, axis, keep=False)
        elif tag == TIME and item == slice(-1, None):
            result = call.writer.last_step(call.layer_name(), result, axis, keep=True)
        elif tag == UNIT and integer and item in (0, -1):
            result = result.without(axis)
        elif tag == TIME:
            raise call.refuse(
                f"takes time step {item!r} of {x.describe()}: a stream only knows the steps so far, so only the "
                "last step ([-1]) can stream"
            )
        elif tag == BATCH:
            raise call.refuse(f"indexes the batch axis of {x.describe()}; each row of the batch is a separate stream")
        else:
            raise call.refuse(f"indexes or slices a feature axis of {x.describe()} with {item!r}; not supported")
    return result


def _transpose(call: Call) -> Tensor:
    x = call.tensor(call.args[0])
    a, b = x.axis(int(call.arg(1, "dim0"))), x.axis(int(call.arg(2, "dim1")))
    perm = list(range(len(x.axes)))
    perm[a], perm[b] = perm[b], perm[a]
    return _permute_to(call, x, tuple(perm))


def _permute(call: Call) -> Tensor:
    x = call.tensor(call.args[0])
    dims = call.args[1:] if len(call.args) > 2 else call.arg(1, "dims")
    dims = tuple(dims) if isinstance(dims, tuple | list) else (dims,)
    return _permute_to(call, x, tuple(x.axis(int(d)) for d in dims))


def _permute_to(call: Call, x: Tensor, perm: tuple[int, ...]) -> Tensor:
    try:
        return x.permuted(perm)
    except UnsupportedLayerError as e:
        raise call.refuse(str(e)) from None


def _same(call: Call) -> Any:
    """``.contiguous()``, ``.detach()``, ``.to(device)``, ...: the value itself."""
    value = call.args[0]
    if not isinstance(value, Tensor | Zeros):
        raise call.refuse(f"is applied to {describe(value)}")
    return value


# -- sizes, and the zeros an initial state is made of ----------------------------------------------


def _getattr(call: Call) -> Any:
    value, attr = call.args
    if isinstance(value, Tensor | Zeros) and attr in ("device", "dtype"):
        return Meta(attr)
    if isinstance(value, Tensor) and attr == "shape":
        return Shape(call.writer.dims(value))
    if isinstance(value, Zeros) and attr == "shape":
        return Shape(value.dims)
    owner = "a tensor" if isinstance(value, Tensor) else describe(value)
    raise call.refuse(f"reads attribute {attr!r} of {owner}")


def _size(call: Call) -> Shape:
    x, dim = call.args[0], call.arg(1, "dim")
    dims = call.writer.dims(call.tensor(x)) if isinstance(x, Tensor) else x.dims if isinstance(x, Zeros) else None
    if dims is None:
        raise call.refuse(f"asks the size of {describe(x)}")
    return Shape(dims) if dim is None else Shape((dims[int(dim)],), True)


def _dims(call: Call, sizes: tuple[Any, ...]) -> tuple[Dim, ...]:
    if len(sizes) == 1 and isinstance(sizes[0], tuple | list | Shape):
        sizes = tuple(sizes[0].dims) if isinstance(sizes[0], Shape) else tuple(sizes[0])
    dims: list[Dim] = []
    for s in sizes:
        if isinstance(s, Shape) and s.scalar:
            dims.append(s.dims[0])
        elif isinstance(s, int) and not isinstance(s, bool):
            dims.append(s)
        else:
            raise call.refuse(f"builds zeros of size {sizes!r}; sizes must be numbers or sizes of the inputs")
    return tuple(dims)


def _zeros(call: Call) -> Zeros:
    return Zeros(_dims(call, call.args))


def _new_zeros(call: Call) -> Zeros:
    return Zeros(_dims(call, call.args[1:]))


def _zeros_like(call: Call) -> Zeros:
    x = call.args[0]
    return Zeros(call.writer.dims(call.tensor(x)) if isinstance(x, Tensor) else _dims(call, (x,)))


def _refused(reason: str) -> Handler:
    def handle(call: Call) -> Any:
        raise call.refuse(f"cannot stream: {reason}")

    return handle


TRACER_CHECKS = (("torch.fx._symbolic_trace", "_assert_is_none"),)
"""Calls torch.fx inserts into a trace for concrete arguments (``concrete_args``): nothing to compute. They
are recognised by module and name (no private attribute of torch is read): a torch whose tracer inserts
other checks refuses them as unknown operations, with their names."""


def handler_of(target: Any) -> Handler | None:
    """The handler of a traced ``call_function`` target, or None for one rnnstream does not read.

    >>> handler_of(operator.getitem) is FUNCTIONS[operator.getitem], handler_of(print)
    (True, None)
    """
    if (getattr(target, "__module__", None), getattr(target, "__name__", None)) in TRACER_CHECKS:
        return lambda call: None
    return FUNCTIONS.get(target)


FUNCTIONS: dict[Any, Handler] = {
    operator.getitem: _getitem,
    getattr: _getattr,
    operator.add: _arith("add"), torch.add: _arith("add"),
    operator.sub: _arith("sub"), torch.sub: _arith("sub"), torch.subtract: _arith("sub"),
    operator.mul: _arith("mul"), torch.mul: _arith("mul"), torch.multiply: _arith("mul"),
    operator.truediv: _arith("div"), torch.div: _arith("div"), torch.divide: _arith("div"),
    torch.cat: _cat, torch.concat: _cat, torch.concatenate: _cat,
    torch.transpose: _transpose, torch.permute: _permute, torch.squeeze: squeeze, torch.unsqueeze: unsqueeze,
    **ACTIVATIONS,
    torch.zeros: _zeros, torch.zeros_like: _zeros_like,
    torch.flip: _refused(f"it reverses the sequence: {NEEDS_FUTURE}"),
    **reductions.FUNCTIONS,
    torch.stack: _refused("it stacks tensors on a new axis; not supported"),
    torch.reshape: reshape, torch.flatten: flatten, nnf.pad: f_pad,
    **FUNCTIONAL,
}  # fmt: skip

PARAMETER_FUNCTIONS = frozenset(FUNCTIONAL)
"""The functions that may take a tensor of the module read directly in forward (``F.linear(h, self.w)``)."""

METHODS: dict[str, Handler] = {
    "size": _size, "contiguous": _same, "clone": _same, "detach": _same, "float": _same, "to": _same,
    "type_as": _same,
    "requires_grad_": _same, "cpu": _same, "cuda": _same, "detach_": _same,
    "transpose": _transpose, "permute": _permute, "squeeze": squeeze, "unsqueeze": unsqueeze,
    "add": _arith("add"), "sub": _arith("sub"), "mul": _arith("mul"), "div": _arith("div"),
    **ACTIVATION_METHODS,
    "new_zeros": _new_zeros,
    "flip": _refused(f"it reverses the sequence: {NEEDS_FUTURE}"),
    **reductions.METHODS,
    "view": reshape, "reshape": reshape, "flatten": flatten,
}  # fmt: skip
