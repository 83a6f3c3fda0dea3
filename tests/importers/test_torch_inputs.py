"""Inputs laid out channels first (issue #20): TCNs whose forward takes ``[B, C, T]`` as it comes (locuslab's
``TCN``), found from the graph when the input goes straight into a Conv1d or its causal padding, or declared with
``input_layout="NCT"``; each equal to PyTorch step by step (T = 1, 7, 50, within 1e-5), a step being ``[B, C]``.
Layouts that do not fit, and a Linear over the time axis, are refused by name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

import rnnstream

torch = pytest.importorskip("torch")
nn = torch.nn
nnf = torch.nn.functional

from tests.importers.test_torch_conformance import TOLERANCE, assert_matches  # noqa: E402
from tests.importers.test_torch_refusals import Wrap  # noqa: E402
from tests.importers.torch_models import TemporalBlock, flat_outputs, randomize  # noqa: E402

LENGTHS = (1, 7, 50)
BATCH = 3
CHANNELS = 5


class LocuslabTCN(nn.Module):
    """locuslab/TCN's TCN model: forward(inputs) with inputs (N, C_in, L_in); weight-normalised temporal blocks
    (dilations 1, 2, 4), then linear(y1[:, :, -1]): one prediction per sequence."""

    def __init__(self) -> None:
        super().__init__()
        blocks = [TemporalBlock(c_in, 6, 2, d, "legacy", chomp=True) for c_in, d in ((CHANNELS, 1), (6, 2), (6, 4))]
        self.tcn = nn.Sequential(*blocks)
        self.linear = nn.Linear(6, 3)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        y1 = self.tcn(inputs)  # (B, 6, T)
        return nnf.log_softmax(self.linear(y1[:, :, -1]), dim=1)


class PaddedFirst(nn.Module):
    """F.pad of the input → Conv1d → softmax over channels (dim=1), returned [B, C_out, T]; and a second output
    through nn.ConstantPad1d → Conv1d → transpose → Linear, [B, T, 2]."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(CHANNELS, 4, 3, dilation=2)
        self.pad = nn.ConstantPad1d((2, 0), 0.0)
        self.conv2 = nn.Conv1d(CHANNELS, 4, 3)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.softmax(self.conv(nnf.pad(x, (4, 0))), dim=1)
        return y, self.head(torch.relu(self.conv2(self.pad(x))).transpose(1, 2))


class ZerosFirst(nn.Module):
    """torch.cat of zeros (x.new_zeros) before the input on its time axis → Conv1d (k=3), returned [B, C_out, T]."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(CHANNELS, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([x.new_zeros((x.size(0), CHANNELS, 2)), x], dim=2))


class ScaledFirst(nn.Module):
    """The input is scaled before the convolution, so the graph cannot tell its layout: declared "NCT"."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(CHANNELS, 4, 2)
        self.gru = nn.GRU(4, 3, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(nnf.pad(torch.tanh(x * 0.5), (1, 0)))
        return self.gru(h.transpose(1, 2))[0][:, -1]


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[], nn.Module]
    channels_first: tuple[int, ...] = ()  # outputs laid out [B, C, T]
    layout: str | None = None


CASES = [
    Case("locuslab_tcn", LocuslabTCN),
    Case("padded_first", PaddedFirst, channels_first=(0,)),
    Case("zeros_first", ZerosFirst, channels_first=(0,)),
    Case("scaled_first_declared", ScaledFirst, layout="NCT"),
]


def _expected(case: Case, module: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        outputs = flat_outputs(module(x))
    return [y.transpose(1, 2) if k in case.channels_first else y for k, y in enumerate(outputs)]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_channels_first_tcn_equals_pytorch(case: Case) -> None:
    module = randomize(case.make(), seed=11)
    model = rnnstream.from_torch(module, torch.zeros(2, CHANNELS, 9), input_layout=case.layout)
    assert model.inputs[0].spec.shape == (CHANNELS,)  # a step is [B, C]
    generator = torch.Generator().manual_seed(1)
    for T in LENGTHS:
        x = torch.randn(BATCH, CHANNELS, T, generator=generator)  # (B, C, T), as the module takes it
        assert_matches(model, _expected(case, module, x), x.transpose(1, 2).numpy())


def test_a_channels_first_stream_steps_one_at_a_time() -> None:
    module = randomize(PaddedFirst(), seed=12)
    model = rnnstream.from_torch(module, torch.zeros(1, CHANNELS, 4))
    x = torch.randn(BATCH, CHANNELS, 10, generator=torch.Generator().manual_seed(2))
    expected = _expected(CASES[1], module, x)
    state = model.initial_state(BATCH)
    for t in range(10):
        ys, state = model.step(x[:, :, t].numpy(), state)
        for ours, theirs in zip(ys, expected, strict=True):
            np.testing.assert_allclose(ours, theirs[:, t].numpy(), **TOLERANCE)


def test_a_declared_layout_is_the_way_where_the_graph_cannot_tell() -> None:
    with pytest.raises(rnnstream.UnsupportedLayerError, match=r"operation 'pad' \(pad\): pads the last axis of "
                       r"\[B, T, F\].*if forward takes \[B, C, T\], say so: input_layout=\"NCT\""):  # fmt: skip
        rnnstream.from_torch(ScaledFirst(), torch.zeros(2, CHANNELS, 9))


CONV = nn.Conv1d(CHANNELS, 4, 1)
REFUSALS = [
    ("unknown_layout", Wrap(lambda s, x: s.conv(x), conv=CONV), "NCX",
     r"input_layout 'NCX' does not fit input 'x' of rank 3 \(floats\): give one of \['NTC', 'TNC', 'NCT'\]"),
    ("one_layout_two_inputs", None, "NCT",
     r"input_layout 'NCT' is one layout, but forward takes 2 inputs: give one per input"),
    ("linear_over_time", Wrap(lambda s, x: s.lin(s.conv(x)), conv=CONV, lin=nn.Linear(4, 4)), None,
     r"module 'lin' \(nn.Linear\): maps the last axis of \[B, F, T\], the time axis; a Linear maps features"),
    ("softmax_over_time", Wrap(lambda s, x: torch.softmax(s.conv(x), dim=-1), conv=CONV), None,
     r"operation 'softmax' \(softmax\): softmax over dim=-1 of \[B, F, T\]: only the last \(feature\) axis"),
    ("gru_on_channels_first", Wrap(lambda s, x: s.gru(x)[0], gru=nn.GRU(9, 3, batch_first=True)), "NCT",
     r"module 'gru' \(nn.GRU\): its input is laid out \[B, F, T\], not a sequence \[B, T, F\] or \[T, B, F\]"),
]  # fmt: skip


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(CHANNELS, 4, 1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + self.conv(y)


@pytest.mark.parametrize(("name", "module", "layout", "message"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_a_layout_that_does_not_fit_is_refused(name: str, module: Any, layout: str | None, message: str) -> None:
    example: Any = torch.zeros(2, CHANNELS, 9)
    if module is None:
        module, example = TwoInputs(), (example, example)
    with pytest.raises(rnnstream.UnsupportedLayerError, match=message):
        rnnstream.from_torch(module, example, input_layout=layout)
