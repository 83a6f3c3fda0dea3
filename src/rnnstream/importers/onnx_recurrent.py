"""ONNX ``LSTM`` / ``GRU`` / ``RNN`` operators → canonical recurrent layers.

Layouts (opset 22, docs/formats.md#from-onnx): ``W [1, G·H, I]``, ``R [1, G·H, H]``, ``B [1, 2·G·H] = [Wb, Rb]``;
gate orders LSTM ``i, o, f, c`` (rnnstream: ``i, f, g, o``), GRU ``z, r, h`` (rnnstream: ``z, r, n``).
``linear_before_reset=1`` is rnnstream's ``reset_after=True`` (``bx = Wb``, ``bh = Rb``); with ``0``
ONNX adds ``Rb`` outside the reset gate, which is exactly a part of the input bias (``bx = Wb + Rb``).
Peepholes ``P [1, 3H]`` (``i, o, f``), ``clip``, ``input_forget``, any ``activations`` ONNX Runtime
knows (with ``activation_alpha`` / ``activation_beta``, consumed in order) and ``layout`` 0 or 1 are
read as they are. ``direction`` reverse or bidirectional, and ``sequence_lens``, are refused: a
stream is read forward, step by step, to its end.

>>> canonical_activations(["Sigmoid", "LeakyRelu", "HardSigmoid"], [0.1], [])
['sigmoid', 'leaky_relu(alpha=0.10000000149011612)', 'hard_sigmoid(alpha=0.20000000298023224, beta=0.5)']
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from rnnstream.errors import UnsupportedLayerError
from rnnstream.importers.axes import BATCH, FEATURE, TIME, UNIT, LayoutError, Tensor, Zeros
from rnnstream.layers.elementwise import parametric_name
from rnnstream.layers.layer import Layer
from rnnstream.layers.recurrent import GRU, LSTM, SimpleRNN
from rnnstream.types import FloatArray

if TYPE_CHECKING:
    from rnnstream.importers.onnx_ops import Op

_PLAIN = {"sigmoid": "sigmoid", "tanh": "tanh", "relu": "relu", "softsign": "softsign", "softplus": "softplus"}
_PARAMETRIC: dict[str, tuple[str, tuple[str, ...], dict[str, float]]] = {
    "affine": ("affine", ("alpha", "beta"), {}),
    "leakyrelu": ("leaky_relu", ("alpha",), {"alpha": 0.01}),
    "thresholdedrelu": ("thresholded_relu", ("alpha",), {}),
    "scaledtanh": ("scaled_tanh", ("alpha", "beta"), {}),
    "hardsigmoid": ("hard_sigmoid", ("alpha", "beta"), {"alpha": 0.2, "beta": 0.5}),
    "elu": ("elu", ("alpha",), {"alpha": 1.0}),
}
"""ONNX name (lower case) → (rnnstream kind, parameters, defaults where ONNX and ONNX Runtime agree)."""

_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
_DEFAULT_ACTIVATIONS = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"], "RNN": ["Tanh"]}


def canonical_activations(names: list[str], alphas: list[float], betas: list[float]) -> list[str]:
    """ONNX ``activations`` with their ``activation_alpha`` / ``activation_beta`` → rnnstream names."""
    alpha_iter, beta_iter = iter(alphas), iter(betas)
    result = []
    for name in names:
        key = name.lower()
        if key in _PLAIN:
            result.append(_PLAIN[key])
            continue
        if key not in _PARAMETRIC:
            known = sorted(["Sigmoid", "Tanh", "Relu", "Softsign", "Softplus", "Affine", "LeakyRelu",
                            "ThresholdedRelu", "ScaledTanh", "HardSigmoid", "Elu"])  # fmt: skip
            raise UnsupportedLayerError(f"activation {name!r} is not an ONNX recurrent activation; known: {known}")
        kind, params, defaults = _PARAMETRIC[key]
        values: dict[str, float] = {}
        for param, source in zip(params, (alpha_iter, beta_iter), strict=False):
            given = next(source, None)
            if given is None and param not in defaults:
                raise UnsupportedLayerError(
                    f"activation {name!r} needs activation_{param} (ONNX and ONNX Runtime disagree on its default)"
                )
            values[param] = float(given) if given is not None else defaults[param]
        plain_elu = kind == "elu" and values["alpha"] == 1.0
        result.append("elu" if plain_elu else parametric_name(kind, **values))
    return result


def _gate_blocks(w: FloatArray, order: list[int], H: int) -> FloatArray:
    """Rows of ``w`` in blocks of ``H``, put in ``order``."""
    return np.concatenate([w[k * H : (k + 1) * H] for k in order])


def _zero_start(op: Op, value: Any, what: str) -> None:
    if value is None or isinstance(value, Zeros) or (isinstance(value, np.ndarray) and not np.any(value)):
        return
    if isinstance(value, np.ndarray):
        raise op.refuse(
            f"{what} is a non-zero constant; rnnstream starts every stream from zeros, so this model's streams "
            "would start elsewhere. Export the model with a zero (or no) initial state"
        )
    raise op.refuse(
        f"{what} comes from the graph (a graph input or a computation); rnnstream keeps each stream's state "
        "itself: export the model without state inputs"
    )


def recurrent(op: Op) -> list[Any]:
    """One ONNX LSTM / GRU / RNN node → one canonical layer; values for ``Y``, ``Y_h`` (and ``Y_c``)."""
    _X, _W, _R, B, seq_lens, h0, c0, P = (op.inputs + [None] * 8)[:8]
    _check_streamable(op, seq_lens, h0, c0)
    x, layout = _sequence(op)
    W, R, Wb, Rb = _weights(op, B is not None)
    layer = _layer(op, W, R, Wb, Rb, _activations(op), has_peepholes=P is not None)
    features = W.shape[2]
    if x.axes[-1] != FEATURE or op.writer.spec(x).shape != (features,):
        raise op.refuse(f"X has features {op.writer.spec(x).shape}, W expects {features}")
    y, *states = op.add(layer, [x])
    y_axes = (TIME, UNIT, BATCH, FEATURE) if layout == (TIME, BATCH) else (BATCH, TIME, UNIT, FEATURE)
    state_axes = (UNIT, BATCH, FEATURE) if layout == (TIME, BATCH) else (BATCH, UNIT, FEATURE)
    return [Tensor(y, y_axes), *(Tensor(s, state_axes) for s in states)]


def _check_streamable(op: Op, seq_lens: Any, h0: Any, c0: Any) -> None:
    """Refuse what a stream cannot be: read backwards, cut at given lengths, or started from a non-zero state."""
    direction = op.attrs.get("direction", "forward")
    if direction != "forward":
        raise op.refuse(f"cannot stream: direction={direction!r} reads the sequence from its end; a stream has no end")
    if seq_lens is not None:
        raise op.refuse("sequence_lens is given; rnnstream reads every sequence to its end: export without it")
    _zero_start(op, h0, "initial_h")
    _zero_start(op, c0, "initial_c")


def _sequence(op: Op) -> tuple[Tensor, tuple[str, str]]:
    """The input ``X`` and its layout: ``(TIME, BATCH)`` (``layout=0``) or ``(BATCH, TIME)`` (``layout=1``)."""
    x = op.tensor(0)
    layout = (BATCH, TIME) if op.attrs.get("layout", 0) else (TIME, BATCH)
    if x.axes != (*layout, FEATURE):
        if x.axes == (layout[1], layout[0], FEATURE):
            raise LayoutError(op.message(f"layout={op.attrs.get('layout', 0)}, but X is laid out {x.describe()}"))
        raise op.refuse(f"X is laid out {x.describe()}; expected [T, B, F] (layout=0) or [B, T, F] (layout=1)")
    return x, layout


def _weights(op: Op, has_bias: bool) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """``W [1, G·H, I]``, ``R [1, G·H, H]`` and the halves ``Wb``, ``Rb`` of ``B`` (zeros without it), checked."""
    G = _GATES[op.node.op_type]
    W, R = op.const(1, "W"), op.const(2, "R")
    if W.ndim != 3 or W.shape[0] != 1 or W.shape[1] % G:
        raise op.refuse(f"W has shape {W.shape}, expected [1, {G}·hidden_size, input_size]")
    H = W.shape[1] // G
    if int(op.attrs.get("hidden_size", H)) != H or R.shape != (1, G * H, H):
        raise op.refuse(f"hidden_size {op.attrs.get('hidden_size')}, W {W.shape} and R {R.shape} do not agree")
    bias = op.const(3, "B") if has_bias else np.zeros((1, 2 * G * H), np.float32)
    if bias.shape != (1, 2 * G * H):
        raise op.refuse(f"B has shape {bias.shape}, expected [1, {2 * G * H}]")
    return W, R, bias[0, : G * H], bias[0, G * H :]


def _activations(op: Op) -> list[str]:
    """The node's ``activations`` (or the operator's defaults) as rnnstream names."""
    kind = op.node.op_type
    names = [str(a) for a in op.attrs.get("activations", _DEFAULT_ACTIVATIONS[kind])]
    if len(names) != len(_DEFAULT_ACTIVATIONS[kind]):
        raise op.refuse(f"activations {names}: {kind} takes {len(_DEFAULT_ACTIVATIONS[kind])} (one direction)")
    try:
        return canonical_activations(names, list(op.attrs.get("activation_alpha", [])),
                                     list(op.attrs.get("activation_beta", [])))  # fmt: skip
    except UnsupportedLayerError as e:
        raise op.refuse(str(e)) from None


def _layer(
    op: Op, W: FloatArray, R: FloatArray, Wb: FloatArray, Rb: FloatArray, acts: list[str], *, has_peepholes: bool
) -> Layer:
    """The canonical layer of the node, from its checked weights and activations."""
    kind = op.node.op_type
    clip = op.attrs.get("clip")
    flags: dict[str, Any] = {
        "return_sequences": True, "return_state": True, "clip": None if clip is None else float(clip),
        "recurrent_activation": acts[0] if kind != "RNN" else "sigmoid", "activation": acts[1 if kind != "RNN" else 0],
    }  # fmt: skip
    name = op.layer_name()
    if kind == "LSTM":
        return _lstm(op, name, W, R, Wb + Rb, acts, has_peepholes, flags)
    if kind == "GRU":
        before = not op.attrs.get("linear_before_reset", 0)
        return GRU(name, Wx=W[0].T.copy(), Wh=R[0].T.copy(), bx=Wb + Rb if before else Wb.copy(),
                   bh=None if before else Rb.copy(), reset_after=not before, **flags)  # fmt: skip
    return SimpleRNN(name, Wx=W[0].T.copy(), Wh=R[0].T.copy(), b=Wb + Rb, **flags)


def _lstm(
    op: Op, name: str, W: FloatArray, R: FloatArray, b: FloatArray, acts: list[str], has_peepholes: bool,
    flags: dict[str, Any],
) -> LSTM:  # fmt: skip
    """An ONNX LSTM's weights, bias ``b = Wb + Rb`` and peepholes in rnnstream's gate order."""
    H = R.shape[2]
    ifgo = [0, 2, 3, 1]  # ONNX i, o, f, c → i, f, g, o
    return LSTM(name, Wx=_gate_blocks(W[0], ifgo, H).T.copy(), Wh=_gate_blocks(R[0], ifgo, H).T.copy(),
                b=_gate_blocks(b, ifgo, H), peepholes=_peepholes(op, H) if has_peepholes else None,
                input_forget=bool(op.attrs.get("input_forget", 0)),
                cell_activation=None if acts[2] == acts[1] else acts[2], **flags)  # fmt: skip


def _peepholes(op: Op, H: int) -> FloatArray:
    """``P [1, 3H]`` (``i, o, f``) as rows ``i, f, o``."""
    p = op.const(7, "P")
    if p.shape != (1, 3 * H):
        raise op.refuse(f"P has shape {p.shape}, expected [1, {3 * H}]")
    return np.stack([p[0, :H], p[0, 2 * H :], p[0, H : 2 * H]])  # rows i, f, o
