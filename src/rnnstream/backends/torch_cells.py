"""The layers that carry state, in torch: LSTM, GRU, SimpleRNN (with their ONNX / PyTorch variants) and
causal Conv1D, each the same math as its NumPy ``cell`` / ``step``.

A recurrent step is one ``addmm`` of the row ``[x, h]`` with the gate weights stacked and stored
transposed once at load time, then the gate math. The plain LSTM's gates are reordered ``i, f, o, g``
so one call of the recurrent activation covers three of them; the GRU's recurrent biases ride in the
same product (reset after: columns ``z, r | x·Wn | h·Wn``, zero blocks where a term is absent). The
variants (``clip``, and for LSTM ``peepholes``, ``input_forget``, ``cell_activation``,
``projection``) take a general path that follows ``LSTM.cell`` line by line. Nothing here
synchronises with the host, so a step can be captured in a CUDA graph.

>>> import numpy as np, torch
>>> from rnnstream.layers.recurrent import SimpleRNN
>>> rnn = SimpleRNN("rnn", Wx=np.eye(2, dtype=np.float32), Wh=np.zeros((2, 2), np.float32),
...                 b=np.zeros(2, np.float32))
>>> outputs, mask, state = simple_rnn(rnn, torch.device("cpu"))([torch.tensor([[0.5, -0.5]])], None,
...                                                              torch.zeros(1, 2))
>>> outputs[0]
tensor([[ 0.4621, -0.4621]])
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from rnnstream.backends import torch_activation_fns
from rnnstream.backends.torch_activation_fns import TorchActivation
from rnnstream.layers.conv import CausalConv1D
from rnnstream.layers.recurrent import GRU, LSTM, Recurrent, SimpleRNN
from rnnstream.types import FloatArray

Result = tuple[list[Tensor], Tensor | None, Tensor]
"""A node's outputs, the mask of output 0, and its new state slice (``[B, 0]`` when stateless)."""

NodeStep = Callable[[list[Tensor], Tensor | None, Tensor], Result]
"""``(inputs [B, ...], mask [B] or None, state slice [B, size]) → Result``."""

VARIANTS = frozenset({"clip", "peepholes", "projection", "input_forget", "cell_activation"})
"""The cell variants (``Recurrent.extras``) the torch steps implement."""


def tensor(a: FloatArray, device: torch.device) -> Tensor:
    """A float32 copy of ``a`` on ``device``."""
    return torch.tensor(np.ascontiguousarray(a, dtype=np.float32), device=device)


def transposed(W: FloatArray, device: torch.device) -> Tensor:
    """``W (K, N)`` as a view of its transpose stored row-major ``(N, K)``: the layout of ``nn.Linear``'s
    weight, which BLAS reads as a transposed operand with no copy."""
    return tensor(W.T, device).t()


def activation(name: str, keras_major: int) -> TorchActivation | str:
    """The torch activation ``name``, or the reason there is none."""
    found = torch_activation_fns.get(name, keras_major)
    return found if found is not None else f"activation {name!r} has no torch version"


def _gates(act: TorchActivation, name: str, z: Tensor, count: int) -> list[Tensor]:
    """``act`` of ``count`` adjacent gate blocks of ``z (B, count·H)``: one call when it is elementwise."""
    if name in torch_activation_fns.NOT_ELEMENTWISE:
        return [act(block) for block in torch.chunk(z, count, dim=1)]
    return list(torch.chunk(act(z), count, dim=1))


def _blocks(a: FloatArray, units: int, order: list[int]) -> FloatArray:
    """The gate blocks of ``a (..., G·H)`` in ``order``."""
    return np.concatenate([a[..., g * units : (g + 1) * units] for g in order], axis=-1)


def _clamp(bound: float | None) -> Callable[[Tensor], Tensor]:
    """ONNX's cell clip of a pre-activation to ``[-bound, bound]`` (identity without one)."""
    if bound is None:
        return lambda z: z
    b = float(np.float32(bound))
    return lambda z: torch.clamp(z, -b, b)


def _finish(layer: Recurrent, new: Tensor, mask: Tensor | None, old: Tensor) -> Result:
    """Masking, outputs and flags from the cell's unmasked new state, as ``Recurrent.finish``."""
    P = layer.state_parts[0][1]  # columns of h, the output
    if mask is None:
        out = new[:, :P]
    else:
        keep = mask[:, None]  # (B, 1)
        new = torch.where(keep, new, old)
        out = torch.where(keep, new[:, :P], 0.0) if layer.zero_output_for_mask else new[:, :P]
    outputs = [out]
    if layer.return_state:
        start = 0
        for _, size in layer.state_parts:
            outputs.append(new[:, start : start + size])
            start += size
    return outputs, mask if layer.return_sequences else None, new


def _prepare(layer: Recurrent, h_size: int) -> tuple[TorchActivation, TorchActivation] | str:
    """The layer's activations, or why this module cannot step it (an unknown variant, odd shapes)."""
    unknown = sorted(set(getattr(layer, "extras", [])) - VARIANTS)
    if unknown:
        return f"{', '.join(unknown)} of the {type(layer).__name__} cell have no torch step"
    H, G = layer.units, layer.gates
    parts = [("h", h_size), ("c", H)] if isinstance(layer, LSTM) else [("h", H)]
    if layer.state_parts != parts or layer.Wh.shape != (h_size, G * H) or layer.Wx.shape[1] != G * H:
        return f"state {layer.state_parts} or weight shapes differ from the {type(layer).__name__} cell's"
    act = activation(layer.activation_name, layer.keras_major)
    ract = activation(layer.recurrent_activation_name, layer.keras_major)
    if isinstance(act, str):
        return act
    return ract if isinstance(ract, str) else (act, ract)


def lstm(layer: LSTM, device: torch.device) -> NodeStep | str:
    projection = getattr(layer, "projection", None)  # (H, P)
    H = layer.units
    P = H if projection is None else int(projection.shape[1])
    acts = _prepare(layer, P)
    if isinstance(acts, str):
        return acts
    act, ract = acts
    peepholes = getattr(layer, "peepholes", None)  # (3, H): rows i, f, o
    input_forget = bool(getattr(layer, "input_forget", False))
    cell_name = getattr(layer, "cell_activation_name", None)
    clip = getattr(layer, "clip", None)
    if peepholes is None and projection is None and not input_forget and cell_name is None and clip is None:
        return _plain_lstm(layer, act, ract, device)
    cell_act = act if cell_name is None else activation(cell_name, 3)  # as LSTM: elementwise.get(name)
    if isinstance(cell_act, str):
        return cell_act
    W = transposed(np.concatenate([layer.Wx, layer.Wh]), device)  # (I+P, 4H): gates i, f, g, o
    b = tensor(layer.b, device)  # (4H,)
    p = None if peepholes is None else tensor(peepholes, device)  # (3, H)
    Wr = None if projection is None else tensor(projection, device)  # (H, P)
    cut = _clamp(clip)

    def step(inputs: list[Tensor], mask: Tensor | None, state: Tensor) -> Result:
        h, c = state[:, :P], state[:, P:]  # (B, P), (B, H)
        z_i, z_f, z_g, z_o = torch.chunk(torch.addmm(b, torch.cat([inputs[0], h], dim=1), W), 4, dim=1)
        if p is not None:
            z_i, z_f = z_i + p[0] * c, z_f + p[1] * c
        i = ract(cut(z_i))  # (B, H)
        f = 1 - i if input_forget else ract(cut(z_f))  # (B, H)
        c_new = f * c + i * act(cut(z_g))  # (B, H)
        if p is not None:
            z_o = z_o + p[2] * c_new
        h_new = ract(cut(z_o)) * cell_act(c_new)  # (B, H)
        if Wr is not None:
            h_new = h_new @ Wr  # (B, P)
        return _finish(layer, torch.cat([h_new, c_new], dim=1), mask, state)

    return step


def _plain_lstm(layer: LSTM, act: TorchActivation, ract: TorchActivation, device: torch.device) -> NodeStep:
    H, ract_name = layer.units, layer.recurrent_activation_name
    order = [0, 1, 3, 2]  # i, f, o, g: the three σ gates side by side
    W = transposed(_blocks(np.concatenate([layer.Wx, layer.Wh]), H, order), device)  # (I+H, 4H)
    b = tensor(_blocks(layer.b, H, order), device)  # (4H,)

    def step(inputs: list[Tensor], mask: Tensor | None, state: Tensor) -> Result:
        h, c = state[:, :H], state[:, H:]  # (B, H) each
        z = torch.addmm(b, torch.cat([inputs[0], h], dim=1), W)  # (B, 4H)
        i, f, o = _gates(ract, ract_name, z[:, : 3 * H], 3)  # (B, H) each
        c_new = f * c + i * act(z[:, 3 * H :])  # (B, H)
        h_new = o * act(c_new)  # (B, H)
        return _finish(layer, torch.cat([h_new, c_new], dim=1), mask, state)

    return step


def gru(layer: GRU, device: torch.device) -> NodeStep | str:
    acts = _prepare(layer, layer.units)
    if isinstance(acts, str):
        return acts
    act, ract = acts
    H, ract_name = layer.units, layer.recurrent_activation_name
    I = layer.Wx.shape[0]  # noqa: E741
    Wx, Wh, bx = layer.Wx, layer.Wh, layer.bx
    if layer.bh is not None:  # reset after: columns z, r | x·Wx_n | h·Wh_n of one product
        top = np.concatenate([Wx[:, : 2 * H], Wx[:, 2 * H :], np.zeros((I, H), np.float32)], axis=1)
        bottom = np.concatenate([Wh[:, : 2 * H], np.zeros((H, H), np.float32), Wh[:, 2 * H :]], axis=1)
        bias = np.concatenate([bx[: 2 * H] + layer.bh[: 2 * H], bx[2 * H :], layer.bh[2 * H :]])
    else:  # reset before: columns z, r | x·Wx_n; (r ⊙ h)·Wh_n is a second product
        top = Wx
        bottom = np.concatenate([Wh[:, : 2 * H], np.zeros((H, H), np.float32)], axis=1)
        bias = bx
    W = transposed(np.concatenate([top, bottom]), device)  # (I+H, 4H or 3H)
    b = tensor(bias, device)
    Wn = transposed(Wh[:, 2 * H :], device)  # (H, H)
    reset_after = layer.bh is not None
    cut = _clamp(getattr(layer, "clip", None))

    def step(inputs: list[Tensor], mask: Tensor | None, state: Tensor) -> Result:
        h = state  # (B, H)
        a = torch.addmm(b, torch.cat([inputs[0], h], dim=1), W)  # (B, 4H) or (B, 3H)
        z, r = _gates(ract, ract_name, cut(a[:, : 2 * H]), 2)  # (B, H) each
        if reset_after:
            n = act(cut(a[:, 2 * H : 3 * H] + r * a[:, 3 * H :]))  # (B, H)
        else:
            n = act(cut(torch.addmm(a[:, 2 * H :], r * h, Wn)))  # (B, H)
        return _finish(layer, z * h + (1 - z) * n, mask, state)

    return step


def simple_rnn(layer: SimpleRNN, device: torch.device) -> NodeStep | str:
    acts = _prepare(layer, layer.units)
    if isinstance(acts, str):
        return acts
    act = acts[0]
    W = transposed(np.concatenate([layer.Wx, layer.Wh]), device)  # (I+H, H)
    b = tensor(layer.b, device)  # (H,)
    cut = _clamp(getattr(layer, "clip", None))

    def step(inputs: list[Tensor], mask: Tensor | None, state: Tensor) -> Result:
        new = act(cut(torch.addmm(b, torch.cat([inputs[0], state], dim=1), W)))  # (B, H)
        return _finish(layer, new, mask, state)

    return step


def causal_conv(layer: CausalConv1D, device: torch.device) -> NodeStep | str:
    act = activation(layer.activation_name, layer.keras_major)
    if isinstance(act, str):
        return act
    k, I, O = layer.K.shape  # noqa: E741
    history, d = layer.history, layer.dilation
    K = tensor(layer.K.reshape(k * I, O), device)  # (k·I, O): taps oldest first
    b = None if layer.b is None else tensor(layer.b, device)

    def step(inputs: list[Tensor], mask: Tensor | None, state: Tensor) -> Result:
        x = inputs[0]  # (B, I)
        B = x.shape[0]
        past = state.reshape(B, history, I)  # (B, (k-1)d, I), oldest first
        window = torch.cat([past, x[:, None, :]], dim=1)  # (B, (k-1)d + 1, I)
        taps = window[:, ::d].reshape(B, k * I)  # (B, k·I): x_{t-(k-1)d}, …, x_t
        y = taps @ K if b is None else torch.addmm(b, taps, K)  # (B, O)
        return [act(y)], None, window[:, 1:].reshape(B, history * I)

    return step
