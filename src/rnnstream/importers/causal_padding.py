"""The two values a causal convolution is read through, in the PyTorch and ONNX importers alike.

A TCN pads the time axis of ``[B, C, T]`` (``F.pad``, ``nn.ConstantPad1d``, ONNX ``Pad`` or a zero
``Concat``) and convolves it, or convolves with padding at both ends and drops the last steps (the
"chomp"). Neither the padded tensor nor the unchomped output is a tensor a stream can have: the importer
carries them as :class:`TimePadded` and :class:`Unchomped` to the convolution or the chomp that reads them,
and refuses any other use with :func:`pending_error`.

>>> print(pending_error(Unchomped(None, 2, "node 'c' (Conv)"), conv="Conv", chomp="a Slice"))  # doctest: +ELLIPSIS
node 'c' (Conv): is not causal: its last 2 outputs read inputs that have not arrived yet ...
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rnnstream.errors import UnsupportedLayerError


@dataclass(frozen=True)
class TimePadded:
    """A ``[B, C, T]`` tensor ``x`` (the importer's own tensor type) padded on its time axis by ``what``:
    only a convolution whose window spans exactly the ``left`` padding may read it (a causal one)."""

    x: Any
    left: int
    right: int
    what: str


@dataclass(frozen=True)
class Unchomped:
    """The output ``y`` of a convolution (``what``) padded at the end: its last ``extra`` steps read inputs
    that have not arrived yet, and only the chomp that drops them may read it."""

    y: Any
    extra: int
    what: str


def pending_error(value: Any, *, conv: str, chomp: str, tensor: str = "tensor") -> UnsupportedLayerError | None:
    """Why ``value``, a padded time axis or an unchomped convolution, cannot be a tensor of the model (None
    for any other value). ``conv``: the framework's convolution; ``chomp``: how it writes the chomp;
    ``tensor``: what the framework's users call the padded value."""
    if isinstance(value, TimePadded):
        return UnsupportedLayerError(
            f"{value.what}: pads the time axis, and the padded {tensor} is not read by a {conv} whose window spans "
            "exactly the padding; padding a stream's time axis only streams as part of a causal convolution"
        )
    if isinstance(value, Unchomped):
        return UnsupportedLayerError(
            f"{value.what}: is not causal: its last {value.extra} outputs read inputs that have not arrived yet "
            f"(padding at the end of the time axis); drop them right after it with {chomp}, or pad only the "
            "start of the time axis"
        )
    return None
