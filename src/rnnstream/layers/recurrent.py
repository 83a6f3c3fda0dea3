"""Recurrent layers: LSTM, GRU (reset after / before), SimpleRNN, one step at a time.

Canonical layouts (docs/formats.md#canonical-layouts): ``Wx (I, G·H)``, ``Wh (H, G·H)``; gates in Keras order
(LSTM ``i, f, g, o``; GRU ``z, r, n``). On a masked step (Keras semantics) a stream keeps its state
and its output repeats the previous output, ``h``, or is zero with ``zero_output_for_mask``.

Variants that Keras never makes, for PyTorch and ONNX models: ``clip`` (every gate pre-activation is
clamped to ``[-clip, clip]``, ONNX), and for LSTM ``peepholes`` (ONNX), ``input_forget`` (``f = 1 - i``,
ONNX), ``cell_activation`` (ONNX's ``h`` function, applied to the cell, when it differs from the
candidate's) and ``projection`` (PyTorch ``proj_size``: ``h' = (o ⊙ act(c')) Wr``, so ``h`` has
``proj_size`` columns and ``c`` has ``units``). A layer that uses none of them is :attr:`plain`:
exactly the Keras cell, which the fused kernel computes.

>>> import numpy as np
>>> rnn = SimpleRNN("rnn", Wx=np.eye(2, dtype=np.float32), Wh=np.zeros((2, 2), np.float32),
...                 b=np.zeros(2, np.float32))
>>> out = rnn.step([np.float32([[0.5, -0.5]])], None, rnn.initial_state(1))
>>> np.round(out.outputs[0], 4)
array([[ 0.4621, -0.4621]], dtype=float32)
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import numpy as np

from rnnstream.layers import elementwise
from rnnstream.layers.activations import Activation
from rnnstream.layers.layer import Layer, StepResult, TensorSpec, last_dim
from rnnstream.types import BoolArray, FloatArray


class Recurrent(Layer):
    """What LSTM, GRU and SimpleRNN share: weights ``Wx, Wh``, flags, masking, outputs."""

    gates: int = 1

    def __init__(
        self,
        name: str,
        *,
        Wx: FloatArray,
        Wh: FloatArray,
        activation: str = "tanh",
        recurrent_activation: str = "sigmoid",
        keras_major: int = 3,
        return_sequences: bool = True,
        return_state: bool = False,
        zero_output_for_mask: bool = False,
        clip: float | None = None,
    ) -> None:
        super().__init__(name)
        if Wx.ndim != 2 or Wh.ndim != 2 or Wx.shape[1] % self.gates or Wh.shape[1] != Wx.shape[1]:
            raise self.refuse(
                f"weights Wx {Wx.shape} and Wh {Wh.shape} do not fit {self.gates} gates: "
                f"expected (I, {self.gates}·H) and (h, {self.gates}·H)"
            )
        self.units = Wx.shape[1] // self.gates  # H: the width of each gate
        self.Wx = Wx  # (I, G·H)
        self.Wh = Wh  # (h_size, G·H)
        if clip is not None and not clip > 0:
            raise self.refuse(f"clip must be a positive number, got {clip}")
        self.activation_name = activation
        self.recurrent_activation_name = recurrent_activation
        self.keras_major = keras_major
        self.act: Activation = elementwise.get(activation, keras_major)
        self.ract: Activation = elementwise.get(recurrent_activation, keras_major)
        self.return_sequences = return_sequences
        self.return_state = return_state
        self.zero_output_for_mask = zero_output_for_mask
        self.clip = clip

    @property
    def h_size(self) -> int:
        """Columns of ``h``, the layer's output: ``units``, or the projection's size."""
        return int(self.Wh.shape[0])

    @property
    def extras(self) -> list[str]:
        """The variants (beyond the Keras cell) this layer uses, by name; empty for a plain layer."""
        return ["clip"] if self.clip is not None else []

    @property
    def plain(self) -> bool:
        """True when the cell is exactly the Keras one (what the fused kernel and Keras compute)."""
        return not self.extras

    @property
    def state_parts(self) -> list[tuple[str, int]]:
        return [("h", self.h_size)]

    def output_specs(self, inputs: list[TensorSpec]) -> list[TensorSpec]:
        if len(inputs) != 1:
            raise self.refuse(f"takes one input sequence, got {len(inputs)} tensors")
        (x,) = inputs
        features = last_dim(self, x)
        if len(x.shape) != 1:
            raise self.refuse(f"expects (batch, time, features) input, got {x.describe()}")
        if not x.sequence:
            raise self.refuse(
                "is fed a whole-sequence value (the output of an RNN with return_sequences=False), "
                "not a sequence; it cannot stream"
            )
        if features != self.Wx.shape[0]:
            raise self.refuse(f"kernel expects {self.Wx.shape[0]} input features, input has {features}")
        out = TensorSpec((self.h_size,), sequence=self.return_sequences)
        states = [TensorSpec((size,), sequence=False) for _, size in self.state_parts]
        return [out, *states] if self.return_state else [out]

    def step(self, inputs: list[FloatArray], mask: BoolArray | None, state: FloatArray) -> StepResult:
        (x,) = inputs
        return self.finish(self.cell(x, state), mask, state)

    def finish(self, new_state: FloatArray, mask: BoolArray | None, state: FloatArray) -> StepResult:
        """The step's result from the cell's unmasked new state ``(B, S)``: masking, outputs, flags."""
        if mask is None:
            out = new_state[:, : self.h_size]
        else:
            keep = mask[:, None]  # (B, 1)
            new_state = np.where(keep, new_state, state)
            h = new_state[:, : self.h_size]
            out = np.where(keep, h, np.float32(0)) if self.zero_output_for_mask else h
        outputs = [out]
        if self.return_state:
            outputs += [new_state[:, start : start + size] for start, size in self._part_offsets()]
        return StepResult(outputs, mask if self.return_sequences else None, new_state)

    def _part_offsets(self) -> list[tuple[int, int]]:
        offsets, start = [], 0
        for _, size in self.state_parts:
            offsets.append((start, size))
            start += size
        return offsets

    def _clip(self, z: FloatArray) -> FloatArray:
        """ONNX's cell clip: a gate pre-activation clamped to ``[-clip, clip]`` (identity without clip)."""
        if self.clip is None:
            return z
        bound = np.float32(self.clip)
        return np.clip(z, -bound, bound)

    @abstractmethod
    def cell(self, x: FloatArray, state: FloatArray) -> FloatArray:
        """One unmasked step of the cell: ``x (B, I)``, ``state (B, S)`` → new state ``(B, S)``."""

    def config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "units": self.units,
            "activation": self.activation_name,
            "recurrent_activation": self.recurrent_activation_name,
            "keras_major": self.keras_major,
            "return_sequences": self.return_sequences,
            "return_state": self.return_state,
            "zero_output_for_mask": self.zero_output_for_mask,
        }
        # Variant keys only when used, so a plain layer's fingerprint is what it always was.
        return config if self.clip is None else {**config, "clip": self.clip}


class LSTM(Recurrent):
    """Long short-term memory (Hochreiter & Schmidhuber 1997), Keras gate order i, f, g, o.

    ``z = x Wx + h Wh + b``; ``c' = σ(z_f) c + σ(z_i) act(z_g)``; ``h' = σ(z_o) act(c')``.

    Variants (see the module docstring), in ONNX Runtime's order: peepholes add ``p_i ⊙ c`` and
    ``p_f ⊙ c`` to ``z_i``, ``z_f`` and ``p_o ⊙ c'`` to ``z_o``; ``clip`` clamps each pre-activation
    after that; ``input_forget`` replaces ``σ(z_f)`` by ``1 - σ(z_i)``; ``cell_activation`` replaces
    the ``act`` of ``act(c')``; ``projection`` ``Wr (H, P)`` maps ``h'`` to ``(o ⊙ act(c')) Wr``.
    """

    kind = "lstm"
    gates = 4

    def __init__(
        self,
        name: str,
        *,
        Wx: FloatArray,
        Wh: FloatArray,
        b: FloatArray,
        peepholes: FloatArray | None = None,
        projection: FloatArray | None = None,
        input_forget: bool = False,
        cell_activation: str | None = None,
        **flags: Any,
    ) -> None:
        super().__init__(name, Wx=Wx, Wh=Wh, **flags)
        H = self.units
        self.b = b  # (4H,)
        self.peepholes = peepholes  # (3, H): rows i, f, o
        self.projection = projection  # (H, P)
        self.input_forget = input_forget
        self.cell_activation_name = cell_activation
        self.cell_act: Activation = self.act if cell_activation is None else elementwise.get(cell_activation)
        if b.shape != (4 * H,):
            raise self.refuse(f"bias has shape {b.shape}, expected ({4 * H},)")
        if peepholes is not None and peepholes.shape != (3, H):
            raise self.refuse(f"peepholes have shape {peepholes.shape}, expected (3, {H}) (rows i, f, o)")
        expected_h = H if projection is None else projection.shape[1]
        if projection is not None and projection.shape[0] != H:
            raise self.refuse(f"projection has shape {projection.shape}, expected ({H}, proj_size)")
        if self.h_size != expected_h:
            raise self.refuse(f"Wh has {self.h_size} rows, but h has {expected_h} columns")
        self._plain = self.plain  # decided once: the step is on the hot path of the NumPy backend

    @property
    def extras(self) -> list[str]:
        named = [
            ("peepholes", self.peepholes is not None),
            ("projection", self.projection is not None),
            ("input_forget", self.input_forget),
            ("cell_activation", self.cell_activation_name is not None),
        ]
        return super().extras + [name for name, used in named if used]

    @property
    def state_parts(self) -> list[tuple[str, int]]:
        return [("h", self.h_size), ("c", self.units)]

    def cell(self, x: FloatArray, state: FloatArray) -> FloatArray:
        if self._plain:
            return self._plain_cell(x, state)
        H, P = self.units, self.h_size
        h, c = state[:, :P], state[:, P:]  # (B, P), (B, H)
        z = x @ self.Wx + h @ self.Wh + self.b  # (B, 4H)
        z_i, z_f, z_g, z_o = z[:, :H], z[:, H : 2 * H], z[:, 2 * H : 3 * H], z[:, 3 * H :]
        if self.peepholes is not None:
            p_i, p_f, p_o = self.peepholes  # (H,) each
            z_i, z_f = z_i + p_i * c, z_f + p_f * c
        i = self.ract(self._clip(z_i))  # (B, H)
        f = 1 - i if self.input_forget else self.ract(self._clip(z_f))  # (B, H)
        c_new = f * c + i * self.act(self._clip(z_g))  # (B, H)
        if self.peepholes is not None:
            z_o = z_o + p_o * c_new
        o = self.ract(self._clip(z_o))  # (B, H)
        h_new = o * self.cell_act(c_new)  # (B, H)
        if self.projection is not None:
            h_new = h_new @ self.projection  # (B, P)
        return np.concatenate([h_new, c_new], axis=1).astype(np.float32, copy=False)  # (B, P + H)

    def _plain_cell(self, x: FloatArray, state: FloatArray) -> FloatArray:
        H = self.units
        h, c = state[:, :H], state[:, H:]  # (B, H) each
        z = x @ self.Wx + h @ self.Wh + self.b  # (B, 4H)
        i, f, g, o = z[:, :H], z[:, H : 2 * H], z[:, 2 * H : 3 * H], z[:, 3 * H :]
        c_new = self.ract(f) * c + self.ract(i) * self.act(g)  # (B, H)
        h_new = self.ract(o) * self.act(c_new)  # (B, H)
        return np.concatenate([h_new, c_new], axis=1)  # (B, 2H)

    def params(self) -> dict[str, FloatArray]:
        params = {"Wx": self.Wx, "Wh": self.Wh, "b": self.b}
        if self.peepholes is not None:
            params["peepholes"] = self.peepholes
        if self.projection is not None:
            params["projection"] = self.projection
        return params

    def config(self) -> dict[str, Any]:
        config = super().config()
        if self.input_forget:
            config["input_forget"] = True
        if self.cell_activation_name is not None:
            config["cell_activation"] = self.cell_activation_name
        return config


class GRU(Recurrent):
    """Gated recurrent unit (Cho et al. 2014), Keras gate order z, r, n.

    ``reset_after=True`` (Keras 3, PyTorch, cuDNN): ``n = act(x Wx_n + bx_n + r ⊙ (h Wh_n + bh_n))``.
    ``reset_after=False`` (Keras 2 default): ``n = act(x Wx_n + bx_n + (r ⊙ h) Wh_n)``, no ``bh``.
    Both: ``h' = z ⊙ h + (1 - z) ⊙ n``. With ``clip``, the pre-activations of z, r and n are clamped.
    """

    kind = "gru"
    gates = 3

    def __init__(
        self,
        name: str,
        *,
        Wx: FloatArray,
        Wh: FloatArray,
        bx: FloatArray,
        bh: FloatArray | None,
        reset_after: bool,
        **flags: Any,
    ) -> None:
        super().__init__(name, Wx=Wx, Wh=Wh, **flags)
        self.bx = bx  # (3H,)
        self.bh = bh  # (3H,); None when reset_after=False (Keras has no recurrent bias then)
        self.reset_after = reset_after
        if reset_after != (bh is not None):
            raise self.refuse("a recurrent bias bh goes with reset_after=True, and only with it")
        if self.h_size != self.units:
            raise self.refuse(f"Wh has {self.h_size} rows, expected {self.units}")

    def cell(self, x: FloatArray, state: FloatArray) -> FloatArray:
        H = self.units
        h = state  # (B, H)
        xw = x @ self.Wx + self.bx  # (B, 3H)
        clip = self._clip
        if self.bh is not None:  # reset after: the recurrent product, bias included, is gated by r
            hw = h @ self.Wh + self.bh  # (B, 3H)
            z = self.ract(clip(xw[:, :H] + hw[:, :H]))
            r = self.ract(clip(xw[:, H : 2 * H] + hw[:, H : 2 * H]))
            n = self.act(clip(xw[:, 2 * H :] + r * hw[:, 2 * H :]))
        else:
            hw_zr = h @ self.Wh[:, : 2 * H]  # (B, 2H)
            z = self.ract(clip(xw[:, :H] + hw_zr[:, :H]))
            r = self.ract(clip(xw[:, H : 2 * H] + hw_zr[:, H:]))
            n = self.act(clip(xw[:, 2 * H :] + (r * h) @ self.Wh[:, 2 * H :]))
        return np.asarray(z * h + (1 - z) * n, dtype=np.float32)  # (B, H)

    def params(self) -> dict[str, FloatArray]:
        params = {"Wx": self.Wx, "Wh": self.Wh, "bx": self.bx}
        return params if self.bh is None else {**params, "bh": self.bh}

    def config(self) -> dict[str, Any]:
        return {**super().config(), "reset_after": self.reset_after}


class SimpleRNN(Recurrent):
    """Elman network: ``h' = act(x Wx + b + h Wh)`` (the sum clamped first, with ``clip``)."""

    kind = "simple_rnn"

    def __init__(self, name: str, *, Wx: FloatArray, Wh: FloatArray, b: FloatArray, **flags: Any) -> None:
        super().__init__(name, Wx=Wx, Wh=Wh, **flags)
        self.b = b  # (H,)
        if self.h_size != self.units:
            raise self.refuse(f"Wh has {self.h_size} rows, expected {self.units}")

    def cell(self, x: FloatArray, state: FloatArray) -> FloatArray:
        return self.act(self._clip(x @ self.Wx + self.b + state @ self.Wh))  # (B, H)

    def params(self) -> dict[str, FloatArray]:
        return {"Wx": self.Wx, "Wh": self.Wh, "b": self.b}
