"""How a PyTorch module's inputs are laid out (batch, time, features): found from the traced graph, or declared.

A float input of rank 3 is a sequence ``[B, T, F]`` or ``[T, B, F]`` (the recurrent modules' ``batch_first``
decides: the importer tries both), or channels first, ``[B, C, T]``: a TCN that convolves its input as it
comes (locuslab's ``TCN.forward(inputs)  # (N, C_in, L_in)``). Channels first is found in the graph when the
input goes straight into an ``nn.Conv1d`` whose ``in_channels`` is the example's axis 1, or into the causal
padding before one (``F.pad``, ``nn.ConstantPad1d``, ``torch.cat`` with zeros). Where the graph cannot tell
(the input passes through other operations first), ``from_torch(..., input_layout="NCT")`` says so.

A layout is written with one letter per axis of the input: ``N`` the batch, ``T`` time, ``C`` a feature
(or channel) axis. Whatever the layout, a stream's step is ``[B, *features]``: ``[B, C]`` for ``"NCT"``.

>>> parse_layout("NCT", "x", rank=3, integer=False)
('B', 'F', 'T')
>>> [layout_name(axes) for axes in allowed_layouts(3, integer=False)]
['NTC', 'TNC', 'NCT']
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as nnf

from rnnstream.errors import UnsupportedLayerError
from rnnstream.importers.axes import BATCH, FEATURE, TIME, input_layouts
from rnnstream.importers.torch_weights import module_class

LETTERS = {"N": BATCH, "T": TIME, "C": FEATURE}
CHANNELS_FIRST = (BATCH, FEATURE, TIME)
_PADS = (nn.ConstantPad1d, nn.ZeroPad1d)
_JOINS = (torch.cat, torch.concat, torch.concatenate)

InputLayout = str | Sequence[str | None] | None
"""``from_torch``'s ``input_layout``: None (found from the graph), one layout, or one per input (None: found)."""


def layout_name(axes: tuple[str, ...]) -> str:
    names = {tag: letter for letter, tag in LETTERS.items()}
    return "".join(names[a] for a in axes)


def allowed_layouts(rank: int, integer: bool) -> list[tuple[str, ...]]:
    """The layouts an input of this rank and kind may have, the most likely first."""
    return input_layouts(rank, integer) + ([CHANNELS_FIRST] if rank == 3 and not integer else [])


def parse_layout(text: str, name: str, rank: int, integer: bool) -> tuple[str, ...]:
    """A declared layout (``"NCT"``) as axis tags, refused unless it fits the input."""
    axes = tuple(LETTERS.get(letter, "?") for letter in str(text).upper())
    allowed = allowed_layouts(rank, integer)
    if axes not in allowed:
        kind = "token ids" if integer else "floats"
        raise UnsupportedLayerError(
            f"input_layout {text!r} does not fit input {name!r} of rank {rank} ({kind}): give one of "
            f"{[layout_name(a) for a in allowed]} (N the batch, T time, C a feature or channel axis)"
        )
    return axes


def input_dtype(name: str, example: Any) -> str:
    if example.dtype.is_floating_point:
        return "float32"
    if example.dtype in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        return "int64"
    raise UnsupportedLayerError(f"input {name!r} has dtype {example.dtype}; rnnstream takes floats or token ids")


def candidates(
    module: Any, placeholders: list[Any], examples: tuple[Any, ...], declared: InputLayout
) -> list[list[tuple[str, ...]]]:
    """Per input, the layouts to try in turn: the declared one, channels first where the graph says so,
    else every layout its rank allows but channels first."""
    given = _per_input(declared, len(examples))
    result: list[list[tuple[str, ...]]] = []
    for node, example, text in zip(placeholders, examples, given, strict=True):
        name, integer = str(node.target), input_dtype(str(node.target), example) == "int64"
        if text is not None:
            result.append([parse_layout(text, name, example.dim(), integer)])
        elif not integer and example.dim() == 3 and _into_conv(module, node, int(example.shape[1])):
            result.append([CHANNELS_FIRST])
        else:
            result.append(input_layouts(example.dim(), integer))
    return result


def _per_input(declared: InputLayout, n: int) -> list[str | None]:
    if declared is None:
        return [None] * n
    if isinstance(declared, str):
        if n != 1:
            raise UnsupportedLayerError(
                f"input_layout {declared!r} is one layout, but forward takes {n} inputs: give one per input "
                "(None for an input whose layout the graph tells)"
            )
        return [declared]
    given = list(declared)
    if len(given) != n:
        raise UnsupportedLayerError(f"input_layout gives {len(given)} layouts, but forward takes {n} inputs")
    return given


def _into_conv(module: Any, source: Any, channels: int) -> bool:
    """Whether ``source`` (a traced node) goes straight into a Conv1d of ``channels`` input channels, or into
    a padding of its time axis whose result does."""
    for node in source.users:
        first = node.args[0] if node.args else None
        padded = False
        if node.op == "call_module":
            sub = module.get_submodule(node.target)
            kind = module_class(sub)
            if kind is nn.Conv1d and first is source and int(sub.in_channels) == channels:
                return True
            padded = kind in _PADS and first is source
        elif node.op == "call_function":
            padded = (node.target is nnf.pad and first is source) or (
                node.target in _JOINS and isinstance(first, list | tuple) and source in first
            )
        if padded and _into_conv(module, node, channels):
            return True
    return False
