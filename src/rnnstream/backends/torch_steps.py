"""Each canonical layer's step in torch: the same math as its NumPy ``step``, on device tensors.

:func:`torch_step` turns a layer into a :data:`NodeStep` ``(inputs, mask, state) → (outputs, output
mask, new state)`` over tensors ``[B, ...]``, or says why it has none (an option or activation not
implemented here, or a layer class not known here): the caller then keeps that node's NumPy step.
Dispatch is on the exact class, and every option a layer reports in ``config()`` or ``params()``
(the fingerprint's inputs, so anything that changes the math shows up there) must be one implemented
here or be switched off: a new option is refused by name, never ignored. The layers with state are
in :mod:`rnnstream.backends.torch_cells`; nothing here synchronises with the host.

>>> import numpy as np, torch
>>> from rnnstream.layers.dense import Dense
>>> dense = Dense("d", W=np.float32([[1.0], [2.0]]), b=np.float32([0.5]), activation="linear")
>>> outputs, mask, state = torch_step(dense, torch.device("cpu"))([torch.tensor([[1.0, 1.0]])], None,
...                                                              torch.zeros(1, 0))
>>> outputs[0]
tensor([[3.5000]])
"""

from __future__ import annotations

from collections.abc import Callable
from functools import reduce
from typing import Any

import numpy as np
import torch
from torch import Tensor

from rnnstream.backends import torch_cells
from rnnstream.backends.torch_cells import NodeStep, Result, activation, tensor
from rnnstream.layers.conv import CausalConv1D
from rnnstream.layers.dense import Activation, Dense, Embedding, Identity, ReLU
from rnnstream.layers.elementwise import ConstantOp, ParametricActivation
from rnnstream.layers.features import FeatureReduce, FeatureSlice
from rnnstream.layers.layer import Layer
from rnnstream.layers.merge import Concatenate, Masking, Merge
from rnnstream.layers.norm import BatchNorm, LayerNorm, Normalization
from rnnstream.layers.ops import Compare, ExpandDims, Fill, Join, Logical, Reduce
from rnnstream.layers.recurrent import GRU, LSTM, SimpleRNN
from rnnstream.layers.reshape import Permute, Reshape
from rnnstream.layers.sequence import LastStep

MaskRule = Callable[[list[Tensor | None]], Tensor | None]
"""How a call combines its inputs' masks into the one it receives."""

_RECURRENT = frozenset(
    {"units", "activation", "recurrent_activation", "keras_major", "return_sequences", "return_state",
     "zero_output_for_mask", "clip"}
)  # fmt: skip
_KNOWN: dict[type[Layer], tuple[frozenset[str], frozenset[str]]] = {
    LSTM: (_RECURRENT | {"input_forget", "cell_activation"}, frozenset({"Wx", "Wh", "b", "peepholes", "projection"})),
    GRU: (_RECURRENT | {"reset_after"}, frozenset({"Wx", "Wh", "bx", "bh"})),
    SimpleRNN: (_RECURRENT, frozenset({"Wx", "Wh", "b"})),
    CausalConv1D: (frozenset({"dilation", "activation", "keras_major"}), frozenset({"K", "b"})),
    Dense: (frozenset({"activation", "keras_major"}), frozenset({"W", "b"})),
    Embedding: (frozenset({"mask_zero"}), frozenset({"E"})),
    Activation: (frozenset({"activation", "keras_major"}), frozenset()),
    ParametricActivation: (frozenset({"activation"}), frozenset()),
    ReLU: (frozenset({"max_value", "negative_slope", "threshold"}), frozenset()),
    Identity: (frozenset(), frozenset()),
    LastStep: (frozenset(), frozenset()),
    ConstantOp: (frozenset({"op"}), frozenset({"constant"})),
    LayerNorm: (frozenset({"epsilon", "rms_scaling"}), frozenset({"gamma", "beta"})),
    BatchNorm: (frozenset({"epsilon"}), frozenset({"gamma", "beta", "mean", "variance"})),
    Normalization: (frozenset({"invert"}), frozenset({"mean", "variance"})),
    Merge: (frozenset({"op", "keras_major"}), frozenset()),
    Concatenate: (frozenset({"axis", "keras_major"}), frozenset()),
    Masking: (frozenset({"mask_value"}), frozenset()),
    Compare: (frozenset({"op", "value"}), frozenset()),
    Reduce: (frozenset({"op", "axes", "keepdims"}), frozenset()),
    Logical: (frozenset({"op"}), frozenset()),
    ExpandDims: (frozenset({"axis"}), frozenset()),
    Fill: (frozenset({"value", "dtype"}), frozenset()),
    Join: (frozenset({"axis"}), frozenset()),
    Reshape: (frozenset({"shape"}), frozenset()),
    Permute: (frozenset({"perm"}), frozenset()),
    FeatureSlice: (frozenset({"index"}), frozenset()),
    FeatureReduce: (frozenset({"op", "axes", "keepdims"}), frozenset()),
}


def torch_step(layer: Layer, device: torch.device) -> NodeStep | str:
    """``layer``'s step in torch with its weights on ``device``, or the reason it has none."""
    known = _KNOWN.get(type(layer))
    if known is None:
        return f"{type(layer).__name__} layers have no torch step"
    unknown = _unknown_options(layer, *known)
    if unknown:
        return unknown
    build = _BUILDERS[type(layer)]
    return build(layer, device)


def mask_rule(layer: Layer) -> MaskRule | None:
    """The layer's ``combine_masks`` in torch, or None when it overrides it in a way not mirrored here."""
    rule = type(layer).combine_masks
    if rule is Layer.combine_masks:
        return _and_of_present
    if rule is Merge.combine_masks and isinstance(layer, Merge | Concatenate):
        return _and_of_present if layer.keras_major < 3 else _or_of_all
    return None


def _and_of_present(masks: list[Tensor | None]) -> Tensor | None:
    present = [m for m in masks if m is not None]
    return reduce(torch.logical_and, present) if present else None


def _or_of_all(masks: list[Tensor | None]) -> Tensor | None:
    if any(m is None for m in masks):
        return None
    return reduce(torch.logical_or, masks)  # type: ignore[arg-type]


def _unknown_options(layer: Layer, config_keys: frozenset[str], param_keys: frozenset[str]) -> str:
    weights = sorted(set(layer.params()) - param_keys)
    if weights:
        return f"weights {', '.join(weights)} have no torch step"
    options = [f"{k}={v!r}" for k, v in layer.config().items() if k not in config_keys and not _switched_off(v)]
    return f"option {', '.join(options)} has no torch step" if options else ""


def _switched_off(value: Any) -> bool:
    return value is None or (isinstance(value, bool | int | float | str | tuple | list | dict) and not value)


# -- per-step layers -------------------------------------------------------------------------------


def _stateless(fn: Callable[[list[Tensor]], Tensor], mask_out: Callable[[list[Tensor], Tensor | None], Tensor | None]
               ) -> NodeStep:  # fmt: skip
    def step(inputs: list[Tensor], mask: Tensor | None, state: Tensor) -> Result:
        return [fn(inputs)], mask_out(inputs, mask), state

    return step


def _passes(inputs: list[Tensor], mask: Tensor | None) -> Tensor | None:
    return mask


def _drops(inputs: list[Tensor], mask: Tensor | None) -> Tensor | None:
    return None


def _dense(layer: Dense, device: torch.device) -> NodeStep | str:
    act = activation(layer.activation_name, layer.keras_major)
    if isinstance(act, str):
        return act
    W_t = tensor(layer.W.T, device)  # (O, I)
    b = None if layer.b is None else tensor(layer.b, device)
    return _stateless(lambda xs: act(torch.nn.functional.linear(xs[0], W_t, b)), _passes)


def _embedding(layer: Embedding, device: torch.device) -> NodeStep | str:
    E = tensor(layer.E, device)  # (V, D); ids are checked against V on the host, before upload
    mask_zero = layer.mask_zero
    return _stateless(
        lambda xs: torch.nn.functional.embedding(xs[0], E),
        lambda xs, mask: xs[0] != 0 if mask_zero else None,
    )


def _activation_layer(layer: Activation | ParametricActivation, device: torch.device) -> NodeStep | str:
    act = activation(layer.activation_name, getattr(layer, "keras_major", 3))
    if isinstance(act, str):
        return act
    return _stateless(lambda xs: act(xs[0]), _passes)


def _relu(layer: ReLU, device: torch.device) -> NodeStep | str:
    threshold, slope, cap = layer.threshold, layer.negative_slope, layer.max_value

    def relu(xs: list[Tensor]) -> Tensor:
        x = xs[0]
        y = torch.where(x >= threshold, x, slope * (x - threshold))
        return y if cap is None else torch.clamp_max(y, cap)

    return _stateless(relu, _passes)


def _identity(layer: Identity | LastStep, device: torch.device) -> NodeStep | str:
    return _stateless(lambda xs: xs[0], _passes)


def _layer_norm(layer: LayerNorm, device: torch.device) -> NodeStep | str:
    gamma = None if layer.gamma is None else tensor(layer.gamma, device)
    beta = None if layer.beta is None or layer.rms_scaling else tensor(layer.beta, device)
    epsilon, rms = layer.epsilon, layer.rms_scaling

    def norm(xs: list[Tensor]) -> Tensor:
        x = xs[0]
        mean = x.mean(dim=-1, keepdim=True)  # (B, 1)
        var = torch.square(x - mean).mean(dim=-1, keepdim=True)  # (B, 1)
        inv = 1.0 / torch.sqrt(var + epsilon)
        y = x * inv if rms else (x - mean) * inv
        y = y if gamma is None else y * gamma
        return y if beta is None else y + beta

    return _stateless(norm, _passes)


def _batch_norm(layer: BatchNorm, device: torch.device) -> NodeStep | str:
    inv = 1.0 / np.sqrt(layer.variance + np.float32(layer.epsilon))  # (F,), computed as the oracle does
    scale = tensor(inv if layer.gamma is None else inv * layer.gamma, device)
    mean = tensor(layer.mean, device)
    beta = None if layer.beta is None else tensor(layer.beta, device)

    def norm(xs: list[Tensor]) -> Tensor:
        y = (xs[0] - mean) * scale
        return y if beta is None else y + beta

    return _stateless(norm, _passes)


def _normalization(layer: Normalization, device: torch.device) -> NodeStep | str:
    mean, std = tensor(layer.mean, device), tensor(layer.std, device)
    if layer.invert:
        return _stateless(lambda xs: mean + xs[0] * std, _passes)
    return _stateless(lambda xs: (xs[0] - mean) / std, _passes)


_MERGES: dict[str, Callable[[list[Tensor]], Tensor]] = {
    "add": lambda xs: reduce(torch.add, xs),
    "subtract": lambda xs: xs[0] - xs[1],
    "multiply": lambda xs: reduce(torch.mul, xs),
    "average": lambda xs: reduce(torch.add, xs) / float(len(xs)),
    "maximum": lambda xs: reduce(torch.maximum, xs),
    "minimum": lambda xs: reduce(torch.minimum, xs),
}


def _merge(layer: Merge, device: torch.device) -> NodeStep | str:
    merge = _MERGES.get(layer.op)
    return f"merge {layer.op!r} has no torch step" if merge is None else _stateless(merge, _passes)


def _concatenate(layer: Concatenate, device: torch.device) -> NodeStep | str:
    axis = layer.axis
    return _stateless(lambda xs: torch.cat(xs, dim=axis), _passes)


def _masking(layer: Masking, device: torch.device) -> NodeStep | str:
    value = layer.mask_value

    def step(inputs: list[Tensor], mask: Tensor | None, state: Tensor) -> Result:
        x = inputs[0]
        keep = torch.any((x != value).flatten(1), dim=1)  # (B,)
        return [x * keep.reshape(-1, *[1] * (x.dim() - 1))], keep, state

    return step


def _compare(layer: Compare, device: torch.device) -> NodeStep | str:
    value, not_equal = layer.value, layer.op == "not_equal"

    def compare(xs: list[Tensor]) -> Tensor:
        x = xs[0]  # token ids are compared with an integral value as integers, exactly
        v = int(value) if not x.is_floating_point() and float(value).is_integer() else value
        return x != v if not_equal else x == v

    return _stateless(compare, _drops)


def _reduce(layer: Reduce, device: torch.device) -> NodeStep | str:
    axes, keepdims, fn = layer.axes, layer.keepdims, torch.any if layer.op == "any" else torch.all
    if not axes:
        return _stateless(lambda xs: xs[0] != 0, _drops)
    return _stateless(lambda xs: fn(xs[0], dim=axes, keepdim=keepdims), _drops)


def _logical(layer: Logical, device: torch.device) -> NodeStep | str:
    if layer.op == "not":
        return _stateless(lambda xs: torch.logical_not(xs[0]), _drops)
    combine = torch.logical_or if layer.op == "or" else torch.logical_and
    return _stateless(lambda xs: reduce(combine, xs), _drops)


def _expand_dims(layer: ExpandDims, device: torch.device) -> NodeStep | str:
    axis = layer.axis
    return _stateless(lambda xs: torch.unsqueeze(xs[0], axis), _drops)


def _fill(layer: Fill, device: torch.device) -> NodeStep | str:
    value, dtype = layer.value, torch.bool if layer.dtype == "bool" else torch.float32
    return _stateless(lambda xs: torch.full_like(xs[0], value, dtype=dtype), _drops)


def _join(layer: Join, device: torch.device) -> NodeStep | str:
    axis = layer.axis
    return _stateless(lambda xs: torch.cat(xs, dim=axis), _drops)


def _reshape(layer: Reshape, device: torch.device) -> NodeStep | str:
    shape = layer.shape
    return _stateless(lambda xs: xs[0].reshape(xs[0].shape[0], *shape), _drops)  # (B, *shape)


def _permute(layer: Permute, device: torch.device) -> NodeStep | str:
    dims = (0, *(p + 1 for p in layer.perm))
    return _stateless(lambda xs: xs[0].permute(dims), _drops)  # (B, *permuted features)


def _feature_slice(layer: FeatureSlice, device: torch.device) -> NodeStep | str:
    """``x[:, *index]``. Torch slices forward only: an axis read backwards is flipped, then sliced forward
    over the same elements (the sizes are Python ints, so nothing synchronises)."""
    index = layer.index

    def feature_slice(xs: list[Tensor]) -> Tensor:
        x = xs[0]
        key: list[int | slice] = [slice(None)]
        for k, i in enumerate(index):
            if isinstance(i, int):
                key.append(i)
                continue
            n = x.shape[k + 1]
            picked = range(*slice(*i).indices(n))
            if picked.step < 0:  # the same elements, counted from the end of the flipped axis
                x = torch.flip(x, dims=(k + 1,))
                picked = range(n - 1 - picked.start, n - 1 - picked.stop, -picked.step)
            key.append(slice(picked.start, picked.stop, picked.step))
        return x[tuple(key)]  # (B, *sliced features)

    return _stateless(feature_slice, _drops)


_REDUCTIONS: dict[str, Callable[..., Tensor]] = {"mean": torch.mean, "sum": torch.sum, "max": torch.amax,
                                                 "min": torch.amin}  # fmt: skip


def _feature_reduce(layer: FeatureReduce, device: torch.device) -> NodeStep | str:
    fn, axes, keepdims = _REDUCTIONS[layer.op], layer.axes, layer.keepdims
    return _stateless(lambda xs: fn(xs[0], dim=axes, keepdim=keepdims), _drops)  # (B, *kept features)


def _constant_op(layer: ConstantOp, device: torch.device) -> NodeStep | str:
    c, op = tensor(layer.constant, device), layer.op  # c broadcasts over the feature axes
    ops: dict[str, Callable[[Tensor], Tensor]] = {
        "add": lambda x: x + c,
        "sub": lambda x: x - c,
        "rsub": lambda x: c - x,
        "mul": lambda x: x * c,
        "div": lambda x: x / c,
        "rdiv": lambda x: c / x,
    }
    if op not in ops:
        return f"operation {op!r} has no torch step"
    apply = ops[op]
    return _stateless(lambda xs: apply(xs[0]), _passes)


_BUILDERS: dict[type[Layer], Callable[[Any, torch.device], NodeStep | str]] = {
    LSTM: torch_cells.lstm,
    GRU: torch_cells.gru,
    SimpleRNN: torch_cells.simple_rnn,
    CausalConv1D: torch_cells.causal_conv,
    Dense: _dense,
    Embedding: _embedding,
    Activation: _activation_layer,
    ParametricActivation: _activation_layer,
    ReLU: _relu,
    Identity: _identity,
    LastStep: _identity,
    ConstantOp: _constant_op,
    LayerNorm: _layer_norm,
    BatchNorm: _batch_norm,
    Normalization: _normalization,
    Merge: _merge,
    Concatenate: _concatenate,
    Masking: _masking,
    Compare: _compare,
    Reduce: _reduce,
    Logical: _logical,
    ExpandDims: _expand_dims,
    Fill: _fill,
    Join: _join,
    Reshape: _reshape,
    Permute: _permute,
    FeatureSlice: _feature_slice,
    FeatureReduce: _feature_reduce,
}
