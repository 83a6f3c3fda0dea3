"""Recurrent layers: LSTM, GRU (reset after / before), SimpleRNN, one step at a time.

Canonical layouts (see FORMATS.md): ``Wx (I, G·H)``, ``Wh (H, G·H)``; gates in Keras order
(LSTM ``i, f, g, o``; GRU ``z, r, n``). On a masked step (Keras semantics) a stream keeps its state
and its output repeats the previous output, ``h``, or is zero with ``zero_output_for_mask``.

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

from rnnstream.layers import activations
from rnnstream.layers.activations import Activation
from rnnstream.layers.base import Layer, StepResult, TensorSpec, last_dim
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
    ) -> None:
        super().__init__(name)
        self.units = Wh.shape[0]
        self.Wx = Wx  # (I, G·H)
        self.Wh = Wh  # (H, G·H)
        self.activation_name = activation
        self.recurrent_activation_name = recurrent_activation
        self.keras_major = keras_major
        self.act: Activation = activations.get(activation, keras_major)
        self.ract: Activation = activations.get(recurrent_activation, keras_major)
        self.return_sequences = return_sequences
        self.return_state = return_state
        self.zero_output_for_mask = zero_output_for_mask

    @property
    def state_parts(self) -> list[tuple[str, int]]:
        return [("h", self.units)]

    def output_specs(self, inputs: list[TensorSpec]) -> list[TensorSpec]:
        if len(inputs) != 1:
            raise self._refuse(f"takes one input sequence, got {len(inputs)} tensors")
        (x,) = inputs
        features = last_dim(self, x)
        if len(x.shape) != 1:
            raise self._refuse(f"expects (batch, time, features) input, got {x.describe()}")
        if not x.sequence:
            raise self._refuse(
                "is fed a whole-sequence value (the output of an RNN with return_sequences=False), "
                "not a sequence; it cannot stream"
            )
        if features != self.Wx.shape[0]:
            raise self._refuse(f"kernel expects {self.Wx.shape[0]} input features, input has {features}")
        out = TensorSpec((self.units,), sequence=self.return_sequences)
        states = [TensorSpec((self.units,), sequence=False) for _ in self.state_parts]
        return [out, *states] if self.return_state else [out]

    def step(self, inputs: list[FloatArray], mask: BoolArray | None, state: FloatArray) -> StepResult:
        (x,) = inputs
        return self.finish(self.cell(x, state), mask, state)

    def finish(self, new_state: FloatArray, mask: BoolArray | None, state: FloatArray) -> StepResult:
        """The step's result from the cell's unmasked new state ``(B, S)``: masking, outputs, flags."""
        if mask is None:
            out = new_state[:, : self.units]
        else:
            keep = mask[:, None]  # (B, 1)
            new_state = np.where(keep, new_state, state)
            h = new_state[:, : self.units]
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

    @abstractmethod
    def cell(self, x: FloatArray, state: FloatArray) -> FloatArray:
        """One unmasked step of the cell: ``x (B, I)``, ``state (B, S)`` → new state ``(B, S)``."""

    def config(self) -> dict[str, Any]:
        return {
            "units": self.units,
            "activation": self.activation_name,
            "recurrent_activation": self.recurrent_activation_name,
            "keras_major": self.keras_major,
            "return_sequences": self.return_sequences,
            "return_state": self.return_state,
            "zero_output_for_mask": self.zero_output_for_mask,
        }


class LSTM(Recurrent):
    """Long short-term memory (Hochreiter & Schmidhuber 1997), Keras gate order i, f, g, o.

    ``z = x Wx + h Wh + b``; ``c' = σ(z_f) c + σ(z_i) act(z_g)``; ``h' = σ(z_o) act(c')``.
    """

    kind = "lstm"
    gates = 4

    def __init__(self, name: str, *, Wx: FloatArray, Wh: FloatArray, b: FloatArray, **flags: Any) -> None:
        super().__init__(name, Wx=Wx, Wh=Wh, **flags)
        self.b = b  # (4H,)

    @property
    def state_parts(self) -> list[tuple[str, int]]:
        return [("h", self.units), ("c", self.units)]

    def cell(self, x: FloatArray, state: FloatArray) -> FloatArray:
        H = self.units
        h, c = state[:, :H], state[:, H:]  # (B, H) each
        z = x @ self.Wx + h @ self.Wh + self.b  # (B, 4H)
        i, f, g, o = z[:, :H], z[:, H : 2 * H], z[:, 2 * H : 3 * H], z[:, 3 * H :]
        c_new = self.ract(f) * c + self.ract(i) * self.act(g)  # (B, H)
        h_new = self.ract(o) * self.act(c_new)  # (B, H)
        return np.concatenate([h_new, c_new], axis=1)  # (B, 2H)

    def params(self) -> dict[str, FloatArray]:
        return {"Wx": self.Wx, "Wh": self.Wh, "b": self.b}


class GRU(Recurrent):
    """Gated recurrent unit (Cho et al. 2014), Keras gate order z, r, n.

    ``reset_after=True`` (Keras 3, PyTorch, cuDNN): ``n = act(x Wx_n + bx_n + r ⊙ (h Wh_n + bh_n))``.
    ``reset_after=False`` (Keras 2 default): ``n = act(x Wx_n + bx_n + (r ⊙ h) Wh_n)``, no ``bh``.
    Both: ``h' = z ⊙ h + (1 - z) ⊙ n``.
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
            raise self._refuse("a recurrent bias bh goes with reset_after=True, and only with it")

    def cell(self, x: FloatArray, state: FloatArray) -> FloatArray:
        H = self.units
        h = state  # (B, H)
        xw = x @ self.Wx + self.bx  # (B, 3H)
        if self.bh is not None:  # reset after: the recurrent product, bias included, is gated by r
            hw = h @ self.Wh + self.bh  # (B, 3H)
            z = self.ract(xw[:, :H] + hw[:, :H])
            r = self.ract(xw[:, H : 2 * H] + hw[:, H : 2 * H])
            n = self.act(xw[:, 2 * H :] + r * hw[:, 2 * H :])
        else:
            hw_zr = h @ self.Wh[:, : 2 * H]  # (B, 2H)
            z = self.ract(xw[:, :H] + hw_zr[:, :H])
            r = self.ract(xw[:, H : 2 * H] + hw_zr[:, H:])
            n = self.act(xw[:, 2 * H :] + (r * h) @ self.Wh[:, 2 * H :])
        return np.asarray(z * h + (1 - z) * n, dtype=np.float32)  # (B, H)

    def params(self) -> dict[str, FloatArray]:
        params = {"Wx": self.Wx, "Wh": self.Wh, "bx": self.bx}
        return params if self.bh is None else {**params, "bh": self.bh}

    def config(self) -> dict[str, Any]:
        return {**super().config(), "reset_after": self.reset_after}


class SimpleRNN(Recurrent):
    """Elman network: ``h' = act(x Wx + b + h Wh)``."""

    kind = "simple_rnn"

    def __init__(self, name: str, *, Wx: FloatArray, Wh: FloatArray, b: FloatArray, **flags: Any) -> None:
        super().__init__(name, Wx=Wx, Wh=Wh, **flags)
        self.b = b  # (H,)

    def cell(self, x: FloatArray, state: FloatArray) -> FloatArray:
        return self.act(x @ self.Wx + self.b + state @ self.Wh)  # (B, H)

    def params(self) -> dict[str, FloatArray]:
        return {"Wx": self.Wx, "Wh": self.Wh, "b": self.b}
