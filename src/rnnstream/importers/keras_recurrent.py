"""Keras recurrent layers → canonical recurrent layers: ``LSTM``, ``GRU``, ``SimpleRNN``, ``RNN(cell)``, and
``RNN(StackedRNNCells([...]))``, which is a stack of recurrent layers (one canonical layer per cell).

A stack streams exactly like Keras' stacked cells: every cell but the last hands its ``h`` to the next
at each step; on a masked step every cell keeps its state and the output repeats the previous one.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from rnnstream.errors import ModelFileError
from rnnstream.importers.keras_context import LayerContext, activation_name
from rnnstream.layers.layer import Layer
from rnnstream.layers.recurrent import GRU, LSTM, SimpleRNN

CELLS = ("LSTMCell", "GRUCell", "SimpleRNNCell")


def _recurrent_flags(ctx: LayerContext, cell: dict[str, Any]) -> dict[str, Any]:
    c = ctx.config
    if c.get("go_backwards"):
        raise ctx.refuse("go_backwards=True reads the sequence from its end; a stream has no end yet")
    if c.get("time_major"):
        raise ctx.refuse("time_major=True models are not supported; re-save with time_major=False")
    x = ctx.inputs[0] if ctx.inputs else None
    if x is not None and not x.sequence:
        raise ctx.refuse(
            f"its input {x.describe()} has no time axis to step over: it is a whole-sequence value (an RNN's "
            "return_sequences=False output) or comes from a model input without a time axis, so the axis "
            "Keras steps over is not the stream's time axis"
        )
    return {
        "activation": activation_name(cell.get("activation", "tanh")),
        "recurrent_activation": activation_name(cell.get("recurrent_activation", "sigmoid")),
        "keras_major": ctx.keras_major,
        "return_sequences": bool(c.get("return_sequences", False)),
        "return_state": bool(c.get("return_state", False)),
        "zero_output_for_mask": bool(c.get("zero_output_for_mask", False)),
    }


def _cell_config(ctx: LayerContext) -> tuple[str, dict[str, Any]]:
    """(kind, cell config) for LSTM/GRU/SimpleRNN and for ``RNN(cell=...)``."""
    if ctx.class_name != "RNN":
        return ctx.class_name, ctx.config
    cell = ctx.config.get("cell")
    kind = cell.get("class_name") if isinstance(cell, dict) else None
    if not isinstance(cell, dict) or kind not in CELLS:
        module = str(cell.get("module") or "") if isinstance(cell, dict) else ""
        what = "a built-in Keras cell rnnstream has no step for" if module.startswith("keras") else (
            "a cell rnnstream does not know (a custom cell's call() is code, which rnnstream never runs)"
        )
        raise ctx.refuse(
            f"RNN wraps {kind!r}, {what}; supported cells: {', '.join(CELLS)} and StackedRNNCells of them"
        )
    return str(kind).removesuffix("Cell"), cell["config"]


def build_recurrent(ctx: LayerContext) -> Layer:
    """One canonical recurrent layer for LSTM, GRU, SimpleRNN or RNN wrapping one cell."""
    kind, cell = _cell_config(ctx)
    units = int(cell["units"])
    flags = _recurrent_flags(ctx, cell)
    use_bias = bool(cell.get("use_bias", True))
    gates = {"LSTM": 4, "GRU": 3, "SimpleRNN": 1}[kind]
    G = gates * units
    reset_after = bool(cell.get("reset_after", ctx.keras_major >= 3)) if kind == "GRU" else False
    bias_shape: tuple[int, ...] = (2, G) if reset_after else (G,)
    expected: list[tuple[str, tuple[int | None, ...]]] = [("kernel", (None, G)), ("recurrent_kernel", (units, G))]
    if use_bias:
        expected.append(("bias", bias_shape))
    arrays = ctx.take(*expected)
    Wx, Wh = arrays[0], arrays[1]
    b = arrays[2] if use_bias else np.zeros(bias_shape, np.float32)
    if kind == "LSTM":
        return LSTM(ctx.name, Wx=Wx, Wh=Wh, b=b, **flags)
    if kind == "SimpleRNN":
        return SimpleRNN(ctx.name, Wx=Wx, Wh=Wh, b=b, **flags)
    if reset_after:
        return GRU(ctx.name, Wx=Wx, Wh=Wh, bx=b[0], bh=b[1], reset_after=True, **flags)
    return GRU(ctx.name, Wx=Wx, Wh=Wh, bx=b, bh=None, reset_after=False, **flags)


def stacked_cells(ctx: LayerContext) -> list[dict[str, Any]] | None:
    """The cell configs of ``RNN(StackedRNNCells([...]))``, in order; None for any other layer."""
    cell = ctx.config.get("cell") if ctx.class_name == "RNN" else None
    if not isinstance(cell, dict) or cell.get("class_name") != "StackedRNNCells":
        return None
    cells = (cell.get("config") or {}).get("cells")
    if not isinstance(cells, list) or not cells:
        raise ctx.refuse("StackedRNNCells lists no cells")
    return [c for c in cells if isinstance(c, dict)]


def build_stack(ctx: LayerContext, cells: list[dict[str, Any]]) -> list[Layer]:
    """One recurrent layer per cell of a StackedRNNCells, named ``<rnn>/cell_<i>``.

    Every layer but the last returns its whole sequence (the next cell reads ``h`` at each step); the
    last follows the RNN's ``return_sequences`` and ``zero_output_for_mask``. With ``return_state``
    each layer also returns its state, which Keras lists cell by cell after the output.
    """
    layers: list[Layer] = []
    offset = 0
    for i, cell in enumerate(cells):
        count = 3 if bool((cell.get("config") or {}).get("use_bias", True)) else 2
        last = i == len(cells) - 1
        config = {**ctx.config, "cell": cell}
        if not last:
            config.update(return_sequences=True, zero_output_for_mask=False)
        sub = replace(ctx, name=f"{ctx.name}/cell_{i}", config=config, weights=ctx.weights[offset : offset + count])
        layers.append(build_recurrent(sub))
        offset += count
    if offset != len(ctx.weights):
        raise ModelFileError(
            f"layer {ctx.name!r} (RNN of StackedRNNCells): its {len(cells)} cells take {offset} weights; "
            f"the file has {len(ctx.weights)}"
        )
    return layers
