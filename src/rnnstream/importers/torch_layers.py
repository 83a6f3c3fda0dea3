"""``torch.nn`` modules → canonical layers, through one explicit table (:data:`MODULES`).

Weights are copied (a later training step of the module does not change the imported model) and
checked for shape; PyTorch's layouts become rnnstream's (docs/formats.md#from-pytorch): ``Wx = weight_ih.T``,
``b = bias_ih + bias_hh``, GRU gates reordered r, z, n → z, r, n with ``reset_after=True``, an LSTM
``proj_size`` as a projection ``Wr = weight_hr.T``.

>>> import torch
>>> torch.nn.LSTM in MODULES, torch.nn.MultiheadAttention in REFUSED
(True, True)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from torch import nn
from torch.nn import functional as nnf

from rnnstream.importers.axes import BATCH, FEATURE, TIME, LayoutError, Shape, Stack, Tensor, Zeros, axis_name
from rnnstream.importers.torch_activations import activation, elu_name, leaky_relu, softmax
from rnnstream.importers.torch_call import Call, Param, describe, weight
from rnnstream.importers.torch_conv import constant_pad, conv1d
from rnnstream.importers.torch_reshape import flatten_module
from rnnstream.importers.torch_weights import module_class
from rnnstream.layers.dense import Dense, Embedding
from rnnstream.layers.layer import Layer
from rnnstream.layers.norm import LayerNorm
from rnnstream.layers.recurrent import GRU, LSTM, SimpleRNN
from rnnstream.types import FloatArray

Builder = Callable[[Call, Any], Any]


def module_kind(module: Any) -> str:
    cls = module_class(module)
    return f"nn.{cls.__name__}" if cls.__module__.startswith("torch.nn") else cls.__qualname__


def _blocks(w: FloatArray, order: list[int], H: int) -> FloatArray:
    """Rows of ``w`` in gate blocks of ``H``, put in ``order``."""
    return np.concatenate([w[k * H : (k + 1) * H] for k in order])


def _stateless_start(call: Call, state: Any, what: str) -> None:
    """Accept no initial state, ``None`` or zeros; refuse one computed in forward."""
    parts = state if isinstance(state, tuple | list) else (state,)
    if all(p is None or isinstance(p, Zeros) for p in parts):
        return
    raise call.refuse(
        f"is given an initial state ({what}) computed in forward; rnnstream keeps each stream's state itself and "
        "starts it at zeros: call it without a state (or with None or zeros)"
    )


# -- recurrent -------------------------------------------------------------------------------------


def _sequence_input(call: Call, module: Any) -> tuple[Tensor, tuple[str, str]]:
    if module.bidirectional:
        raise call.refuse("cannot stream: bidirectional=True reads the sequence from its end, which a stream has not")
    x = call.tensor(call.arg(0, "input"))
    _stateless_start(call, call.arg(1, "hx"), "hx")
    layout = (BATCH, TIME) if module.batch_first else (TIME, BATCH)
    if x.axes == (*layout, FEATURE):
        return x, layout
    if x.axes == (layout[1], layout[0], FEATURE):
        raise LayoutError(f"{call.what}: batch_first={module.batch_first}, but its input is laid out {x.describe()}")
    if TIME not in x.axes:
        raise call.refuse(
            f"is called on one time step {x.describe()}; it takes a whole sequence. To step a module one "
            "observation at a time, use nn.LSTMCell / nn.GRUCell / nn.RNNCell"
        )
    raise call.refuse(f"its input is laid out {x.describe()}, not a sequence [B, T, F] or [T, B, F]")


def _full_sequence(call: Call, module: Any) -> tuple[Any, ...]:
    """nn.LSTM / nn.GRU / nn.RNN: one canonical layer per stacked layer; ``(out, h_n[, c_n])``."""
    x, layout = _sequence_input(call, module)
    H, L = module.hidden_size, module.num_layers
    P = getattr(module, "proj_size", 0)
    h_size = P or H
    gates = {nn.LSTM: 4, nn.GRU: 3, nn.RNN: 1}[module_class(module)]
    states: list[list[Tensor]] = [[], []]
    t = x
    for k in range(L):
        features = module.input_size if k == 0 else h_size
        W_ih = weight(call, module, f"weight_ih_l{k}", (gates * H, features))
        W_hh = weight(call, module, f"weight_hh_l{k}", (gates * H, h_size))
        zeros = np.zeros(gates * H, np.float32)
        b_ih = weight(call, module, f"bias_ih_l{k}", (gates * H,)) if module.bias else zeros
        b_hh = weight(call, module, f"bias_hh_l{k}", (gates * H,)) if module.bias else zeros
        name = call.layer_name() if L == 1 else call.layer_name(f"_l{k}")
        flags: dict[str, Any] = {"return_sequences": True, "return_state": True}
        layer: Layer
        if isinstance(module, nn.LSTM):
            Wr = weight(call, module, f"weight_hr_l{k}", (P, H)).T.copy() if P else None
            layer = LSTM(name, Wx=W_ih.T.copy(), Wh=W_hh.T.copy(), b=b_ih + b_hh, projection=Wr, **flags)
        elif isinstance(module, nn.GRU):
            rzn = [1, 0, 2]  # PyTorch r, z, n → z, r, n
            layer = GRU(name, Wx=_blocks(W_ih, rzn, H).T.copy(), Wh=_blocks(W_hh, rzn, H).T.copy(),
                        bx=_blocks(b_ih, rzn, H), bh=_blocks(b_hh, rzn, H), reset_after=True, **flags)  # fmt: skip
        else:
            layer = SimpleRNN(name, Wx=W_ih.T.copy(), Wh=W_hh.T.copy(), b=b_ih + b_hh,
                              activation=module.nonlinearity, **flags)  # fmt: skip
        out, *parts = call.add(layer, [t])
        t = Tensor(out, (*layout, FEATURE))
        for part, tensor in zip(states, parts, strict=False):
            part.append(Tensor(tensor, (BATCH, FEATURE)))
    h_n = Stack(tuple(states[0]), 0)
    return (t, (h_n, Stack(tuple(states[1]), 0))) if isinstance(module, nn.LSTM) else (t, h_n)


def _cell(call: Call, module: Any) -> Any:
    """nn.LSTMCell / nn.GRUCell / nn.RNNCell on one step: LSTM gives ``(h, c)``, the others ``h``."""
    x = call.tensor(call.arg(0, "input"))
    _stateless_start(call, call.arg(1, "hx"), "hx")
    if x.axes != (BATCH, FEATURE):
        raise call.refuse(
            f"takes one step [B, F], but is called on {x.describe()}: give from_torch an example of one step, "
            "and call the cell once per step in forward (rnnstream keeps its state between steps)"
        )
    H, features = module.hidden_size, module.input_size
    gates = {nn.LSTMCell: 4, nn.GRUCell: 3, nn.RNNCell: 1}[module_class(module)]
    W_ih = weight(call, module, "weight_ih", (gates * H, features))
    W_hh = weight(call, module, "weight_hh", (gates * H, H))
    zeros = np.zeros(gates * H, np.float32)
    b_ih = weight(call, module, "bias_ih", (gates * H,)) if module.bias else zeros
    b_hh = weight(call, module, "bias_hh", (gates * H,)) if module.bias else zeros
    name = call.layer_name()
    flags: dict[str, Any] = {"return_sequences": True, "return_state": True}
    if isinstance(module, nn.LSTMCell):
        h, _, c = call.add(LSTM(name, Wx=W_ih.T.copy(), Wh=W_hh.T.copy(), b=b_ih + b_hh, **flags), [x])
        return Tensor(h, x.axes), Tensor(c, x.axes)
    layer: Layer
    if isinstance(module, nn.GRUCell):
        rzn = [1, 0, 2]
        layer = GRU(name, Wx=_blocks(W_ih, rzn, H).T.copy(), Wh=_blocks(W_hh, rzn, H).T.copy(),
                    bx=_blocks(b_ih, rzn, H), bh=_blocks(b_hh, rzn, H), reset_after=True, **flags)  # fmt: skip
    else:
        layer = SimpleRNN(name, Wx=W_ih.T.copy(), Wh=W_hh.T.copy(), b=b_ih + b_hh, activation=module.nonlinearity,
                          **flags)  # fmt: skip
    h, _ = call.add(layer, [x])
    return Tensor(h, x.axes)


# -- per-step modules ------------------------------------------------------------------------------


def _linear(call: Call, module: Any) -> Tensor:
    x = call.tensor(call.arg(0, "input"))
    if x.axes[-1] != FEATURE:
        raise call.refuse(
            f"maps the last axis of {x.describe()}, {axis_name(x.axes[-1])}; a Linear maps features: transpose a "
            "[B, C, T] sequence to [B, T, C] first (y.transpose(1, 2))"
        )
    units, features = module.out_features, module.in_features
    W = weight(call, module, "weight", (units, features)).T.copy()
    b = weight(call, module, "bias", (units,)) if module.bias is not None else None
    (y,) = call.add(Dense(call.layer_name(), W=W, b=b, activation="linear"), [x])
    return Tensor(y, x.axes)


def _embedding(call: Call, module: Any) -> Tensor:
    x = call.tensor(call.arg(0, "input"))
    if module.max_norm is not None:
        raise call.refuse("max_norm renormalises (and rewrites) the embedding rows at lookup; not supported")
    E = weight(call, module, "weight", (module.num_embeddings, module.embedding_dim))
    (y,) = call.add(Embedding(call.layer_name(), E=E, mask_zero=False), [x])
    return Tensor(y, (*x.axes, FEATURE))


def _layer_norm(call: Call, module: Any) -> Tensor:
    F = _normalized_size(call, call.tensor(call.arg(0, "input")), module.normalized_shape)
    gamma = weight(call, module, "weight", (F,)) if module.elementwise_affine else None
    beta = weight(call, module, "bias", (F,)) if getattr(module, "bias", None) is not None else None
    return _normalize(call, gamma, beta, float(module.eps))


def _normalized_size(call: Call, x: Tensor, normalized_shape: Any) -> int:
    given = normalized_shape.dims if isinstance(normalized_shape, Shape) else normalized_shape
    given = tuple(given) if isinstance(given, tuple | list) else (given,)
    shape = tuple(d.dims[0] if isinstance(d, Shape) else d for d in given)
    if len(shape) != 1 or x.axes[-1] != FEATURE or call.writer.dims(x)[-1] != shape[0]:
        raise call.refuse(
            f"normalises over {shape} of {x.describe()} (sizes {call.writer.dims(x)}); only the last (feature) "
            "axis is supported"
        )
    return int(shape[0])


def _normalize(call: Call, gamma: FloatArray | None, beta: FloatArray | None, eps: float) -> Tensor:
    x = call.tensor(call.arg(0, "input"))
    (y,) = call.add(LayerNorm(call.layer_name(), gamma=gamma, beta=beta, epsilon=eps), [x])
    return Tensor(y, x.axes)


def _param(call: Call, value: Any, role: str, shape: tuple[int, ...]) -> FloatArray | None:
    """The ``role`` argument of a functional call: None, or a tensor of the module of ``shape``."""
    if value is None:
        return None
    if not isinstance(value, Param):
        raise call.refuse(f"its {role} is {describe(value)}; it must be a tensor of the module (an nn.Parameter)")
    if value.value.shape != shape:
        raise call.refuse(f"its {role} {value.name!r} has shape {value.value.shape}, expected {shape}")
    return value.value.copy()


def _f_linear(call: Call) -> Tensor:
    """``F.linear(x, w, b)`` with the module's own tensors: a Dense with ``W = w.T``."""
    x = call.tensor(call.arg(0, "input"))
    w = call.arg(1, "weight")
    if not isinstance(w, Param) or w.value.ndim != 2:
        raise call.refuse(f"its weight is {describe(w)}; it must be a 2-D tensor of the module (an nn.Parameter)")
    features = call.writer.dims(x)[-1] if x.axes[-1] == FEATURE else None
    if w.value.shape[1] != features:
        raise call.refuse(f"its weight {w.name!r} {w.value.shape} does not fit the features of {x.describe()}")
    b = _param(call, call.arg(2, "bias"), "bias", (w.value.shape[0],))
    (y,) = call.add(Dense(call.layer_name(), W=w.value.T.copy(), b=b, activation="linear"), [x])
    return Tensor(y, x.axes)


def _f_layer_norm(call: Call) -> Tensor:
    """``F.layer_norm(x, (F,), weight, bias, eps)``, the tensors the module's own or None."""
    F = _normalized_size(call, call.tensor(call.arg(0, "input")), call.arg(1, "normalized_shape"))
    gamma = _param(call, call.arg(2, "weight"), "weight", (F,))
    beta = _param(call, call.arg(3, "bias"), "bias", (F,))
    return _normalize(call, gamma, beta, float(call.arg(4, "eps", 1e-5)))


FUNCTIONAL: dict[Any, Callable[[Call], Any]] = {nnf.linear: _f_linear, nnf.layer_norm: _f_layer_norm}
"""Functions that read tensors of the module (``self.w``): the weights of a Dense or a LayerNorm."""


def _identity(call: Call, module: Any) -> Any:
    return call.arg(0, "input")


def _act(name: str) -> Builder:
    return lambda call, module: activation(call, call.tensor(call.arg(0, "input")), name)


def _checked_act(name: str, **defaults: float) -> Builder:
    """An activation module whose parameters must keep their defaults (e.g. nn.Hardtanh(-1, 1))."""

    def build(call: Call, module: Any) -> Tensor:
        changed = {k: getattr(module, k) for k, v in defaults.items() if float(getattr(module, k)) != v}
        if changed:
            raise call.refuse(f"parameters {changed} are not supported (only {defaults})")
        return activation(call, call.tensor(call.arg(0, "input")), name)

    return build


def _gelu(call: Call, module: Any) -> Tensor:
    if module.approximate != "none":
        raise call.refuse("approximate='tanh' is not supported; use the exact GELU")
    return activation(call, call.tensor(call.arg(0, "input")), "gelu")


def _softmax(name: str) -> Builder:
    return lambda call, module: softmax(call, call.tensor(call.arg(0, "input")), module.dim, name)


MODULES: dict[type, Builder] = {
    nn.LSTM: _full_sequence, nn.GRU: _full_sequence, nn.RNN: _full_sequence,
    nn.LSTMCell: _cell, nn.GRUCell: _cell, nn.RNNCell: _cell,
    nn.Linear: _linear, nn.Embedding: _embedding, nn.LayerNorm: _layer_norm,
    nn.Dropout: _identity, nn.Dropout1d: _identity, nn.AlphaDropout: _identity,
    nn.FeatureAlphaDropout: _identity, nn.Identity: _identity,
    nn.ReLU: _act("relu"), nn.Tanh: _act("tanh"), nn.Sigmoid: _act("sigmoid"), nn.GELU: _gelu,
    nn.SiLU: _act("silu"), nn.Mish: _act("mish"), nn.Softsign: _act("softsign"), nn.SELU: _act("selu"),
    nn.ReLU6: _act("relu6"), nn.Hardsigmoid: _act("hard_sigmoid"), nn.Hardswish: _act("hard_silu"),
    nn.LogSigmoid: _act("log_sigmoid"), nn.Tanhshrink: _act("tanh_shrink"),
    nn.Softplus: _checked_act("softplus", beta=1.0), nn.Hardtanh: _checked_act("hard_tanh", min_val=-1.0, max_val=1.0),
    nn.CELU: _checked_act("celu", alpha=1.0), nn.Softshrink: _checked_act("soft_shrink", lambd=0.5),
    nn.Hardshrink: _checked_act("hard_shrink", lambd=0.5),
    nn.ELU: lambda call, m: activation(call, call.tensor(call.arg(0, "input")), elu_name(float(m.alpha))),
    nn.LeakyReLU: lambda call, m: leaky_relu(call, call.tensor(call.arg(0, "input")), m.negative_slope),
    nn.Softmax: _softmax("softmax"), nn.LogSoftmax: _softmax("log_softmax"), nn.Flatten: flatten_module,
    nn.Conv1d: conv1d, nn.ConstantPad1d: constant_pad, nn.ZeroPad1d: constant_pad,
}  # fmt: skip

_NEEDS_FUTURE = "needs the whole sequence, including steps that have not arrived yet"
REFUSED: dict[type, str] = {
    nn.MultiheadAttention: f"it attends over every time step: it {_NEEDS_FUTURE}",
    nn.Transformer: f"it attends over every time step: it {_NEEDS_FUTURE}",
    nn.TransformerEncoder: f"it attends over every time step: it {_NEEDS_FUTURE}",
    nn.TransformerDecoder: f"it attends over every time step: it {_NEEDS_FUTURE}",
    nn.TransformerEncoderLayer: f"it attends over every time step: it {_NEEDS_FUTURE}",
    nn.TransformerDecoderLayer: f"it attends over every time step: it {_NEEDS_FUTURE}",
    nn.ReflectionPad1d: "it fills the padding from the sequence itself (steps that have not arrived yet)",
    nn.ReplicationPad1d: "it fills the padding from the sequence itself (steps that have not arrived yet)",
    nn.AvgPool1d: "it pools over windows of time steps, changing the time axis",
    nn.MaxPool1d: "it pools over windows of time steps, changing the time axis",
    nn.AdaptiveAvgPool1d: f"it pools over time: it {_NEEDS_FUTURE}",
    nn.AdaptiveMaxPool1d: f"it pools over time: it {_NEEDS_FUTURE}",
    nn.BatchNorm1d: "on a sequence it normalises channels of [B, C, T] (features before time); not supported",
}
