"""Temporal convolutional networks (issue #20) from PyTorch and from their ONNX exports: ``F.pad`` /
``nn.ConstantPad1d`` before ``nn.Conv1d`` and the chomp after a padded one, on ``[B, C, T]``, each a causal
convolution equal to PyTorch (and ONNX Runtime) step by step (T = 1, 7, 50, within 1e-5); convolutions that
read future steps or change the step rate are refused by name, with the reason."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import rnnstream

torch = pytest.importorskip("torch")
nn = torch.nn
nnf = torch.nn.functional

from tests.importers.test_torch_conformance import TOLERANCE, assert_matches  # noqa: E402
from tests.importers.test_torch_refusals import Wrap  # noqa: E402
from tests.importers.torch_models import (  # noqa: E402
    Chomp1d,
    TorchCase,
    randomize,
    reference_outputs,
    sequence_input,
)

LENGTHS = (1, 7, 50)
BATCH = 3


class Block(nn.Module):
    """A TCN residual block: two dilated causal convolutions (F.pad of (k-1)·d) and a 1×1 downsample."""

    def __init__(self, channels_in: int, channels: int, k: int, d: int) -> None:
        super().__init__()
        self.pad = (k - 1) * d
        self.conv1 = nn.Conv1d(channels_in, channels, k, dilation=d)
        self.conv2 = nn.Conv1d(channels, channels, k, dilation=d)
        self.down = nn.Conv1d(channels_in, channels, 1) if channels_in != channels else None
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T)
        out = self.relu(self.conv1(nnf.pad(x, (self.pad, 0))))
        out = self.relu(self.conv2(nnf.pad(out, (self.pad, 0))))
        res = x if self.down is None else self.down(x)
        return self.relu(out + res)


class ResidualTCN(nn.Module):
    """Two residual blocks (dilations 1 and 2) between transposes, and a per-step head."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.Sequential(Block(5, 8, 3, 1), Block(8, 8, 3, 2))
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, 5)
        return self.head(self.blocks(x.transpose(1, 2)).transpose(1, 2))


class PadModules(nn.Module):
    """nn.ConstantPad1d((4, 0), 0) + Conv1d(k=3, d=2), then nn.ZeroPad1d((1, 0)) + a grouped Conv1d(k=2)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.ConstantPad1d((4, 0), 0.0), nn.Conv1d(5, 6, 3, dilation=2), nn.Tanh(),
            nn.ZeroPad1d((1, 0)), nn.Conv1d(6, 4, 2, groups=2),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.transpose(1, 2)).transpose(1, 2)


class ChompTCN(nn.Module):
    """Conv1d(padding=(k-1)·d) + Chomp1d + ReLU, dilations 1, 2 and 4."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i, d in enumerate((1, 2, 4)):
            layers += [nn.Conv1d(5 if i == 0 else 6, 6, 3, padding=2 * d, dilation=d), Chomp1d(2 * d), nn.ReLU()]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.transpose(1, 2)).transpose(1, 2)


class TCNThenGRU(nn.Module):
    """Two dilated causal convolutions, then a GRU over their outputs; per-step outputs and the last step."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(5, 7, 2, dilation=1)
        self.conv2 = nn.Conv1d(7, 7, 2, dilation=3)
        self.gru = nn.GRU(7, 6, batch_first=True)
        self.head = nn.Linear(6, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.relu(self.conv1(nnf.pad(x.transpose(1, 2), (1, 0))))
        h = torch.relu(self.conv2(nnf.pad(h, (3, 0))))
        out, _ = self.gru(h.transpose(1, 2))
        return out, self.head(out[:, -1])


class ZeroConcat(nn.Module):
    """Causal padding written as torch.cat of zeros before the sequence (from ONNX: a Concat of zeros)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(5, 4, 3, dilation=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.transpose(1, 2)
        return self.conv(torch.cat([h.new_zeros(h.size(0), 5, 4), h], dim=2)).transpose(1, 2)


CASES = [
    TorchCase("residual_tcn", ResidualTCN),
    TorchCase("pad_modules", PadModules),
    TorchCase("chomp_tcn", ChompTCN),
    TorchCase("tcn_then_gru", TCNThenGRU),
    TorchCase("zero_concat", ZeroConcat),
]


@pytest.fixture(params=CASES, ids=lambda c: c.name)
def imported(request: pytest.FixtureRequest) -> tuple[TorchCase, Any, rnnstream.StreamModel]:
    case: TorchCase = request.param
    module = randomize(case.make(), seed=3)
    return case, module, rnnstream.from_torch(module, sequence_input(case, 2, 4, seed=0))


@pytest.mark.parametrize("T", LENGTHS)
def test_tcn_equals_pytorch(imported: tuple[TorchCase, Any, rnnstream.StreamModel], T: int) -> None:
    case, module, model = imported
    x = sequence_input(case, BATCH, T, seed=T)
    assert_matches(model, reference_outputs(case, module, x), x.numpy())


def test_tcn_steps_one_at_a_time(imported: tuple[TorchCase, Any, rnnstream.StreamModel]) -> None:
    """Stepping the stream by hand gives PyTorch's output at every step."""
    case, module, model = imported
    x = sequence_input(case, BATCH, 12, seed=5)
    expected = reference_outputs(case, module, x)[0].numpy()
    state = model.initial_state(BATCH)
    for t in range(12):
        y, state = model.step(x[:, t].numpy(), state)
        np.testing.assert_allclose(y[0] if isinstance(y, list) else y, expected[:, t], **TOLERANCE)


def test_tcn_layers_are_causal_convolutions() -> None:
    model = rnnstream.from_torch(randomize(ResidualTCN(), seed=1), torch.zeros(1, 4, 5))
    kinds = [node.layer.kind for node in model.graph.nodes]
    assert kinds.count("causal_conv1d") == 5


SEQ = torch.zeros(2, 6, 4)
CONV = nn.Conv1d(4, 3, 3, padding=2)

TORCH_REFUSALS = [
    ("symmetric_padding", Wrap(lambda s, x: s.conv(x.transpose(1, 2)).transpose(1, 2), conv=CONV),
     r"module 'conv' \(nn.Conv1d\): is not causal: its last 2 outputs read inputs that have not arrived yet"),
    ("symmetric_padding_then_relu", Wrap(lambda s, x: torch.relu(s.conv(x.transpose(1, 2))), conv=CONV),
     r"module 'conv' \(nn.Conv1d\): is not causal"),
    ("short_chomp", Wrap(lambda s, x: s.conv(x.transpose(1, 2))[:, :, :-1], conv=CONV),
     r"\(getitem\): takes .* of the output of module 'conv' \(nn.Conv1d\), which has 2 steps of padding at the end"),
    ("same", Wrap(lambda s, x: s.conv(x.transpose(1, 2)), conv=nn.Conv1d(4, 3, 3, padding="same")),
     r"module 'conv' \(nn.Conv1d\): is not causal: .* each output reads 1 future steps"),
    ("stride", Wrap(lambda s, x: s.conv(nnf.pad(x.transpose(1, 2), (2, 0))), conv=nn.Conv1d(4, 3, 3, stride=2)),
     r"module 'conv' \(nn.Conv1d\): stride=2 .* changes the step rate"),
    ("short_pad", Wrap(lambda s, x: s.conv(nnf.pad(x.transpose(1, 2), (1, 0))), conv=nn.Conv1d(4, 3, 3)),
     r"module 'conv' \(nn.Conv1d\): is not causal: .* reads 1 future steps"),
    ("long_pad", Wrap(lambda s, x: s.conv(nnf.pad(x.transpose(1, 2), (3, 0))), conv=nn.Conv1d(4, 3, 3)),
     r"module 'conv' \(nn.Conv1d\): is padded by 3 at the start, .* shifting the time axis"),
    ("unpadded", Wrap(lambda s, x: s.conv(x.transpose(1, 2)), conv=nn.Conv1d(4, 3, 3)),
     r"module 'conv' \(nn.Conv1d\): is not causal: .* padded by 0 at the start"),
    ("time_not_last", Wrap(lambda s, x: s.conv(x), conv=nn.Conv1d(4, 3, 1)),
     r"module 'conv' \(nn.Conv1d\): convolves the last axis of \[B, T, F\], which is not time"),
    ("reflect", Wrap(lambda s, x: s.conv(nnf.pad(x.transpose(1, 2), (2, 0), mode="reflect")), conv=nn.Conv1d(4, 3, 3)),
     r"operation 'pad' \(pad\): mode='reflect' fills the padding from the sequence itself"),
    ("pad_value", Wrap(lambda s, x: s.conv(nnf.pad(x.transpose(1, 2), (2, 0), value=1.0)), conv=nn.Conv1d(4, 3, 3)),
     r"operation 'pad' \(pad\): pads with 1.0; a stream starts a convolution's past at zeros"),
    ("pad_features", Wrap(lambda s, x: nnf.pad(x, (2, 0))),
     r"operation 'pad' \(pad\): pads the last axis of \[B, T, F\], a feature axis"),
    ("pad_unused", Wrap(lambda s, x: torch.relu(nnf.pad(x.transpose(1, 2), (2, 0)))),
     r"operation 'pad' \(pad\): pads the time axis, and the padded sequence is not read by a Conv1d"),
    ("replication_pad", Wrap(lambda s, x: s.pad(x.transpose(1, 2)), pad=nn.ReplicationPad1d((2, 0))),
     r"module 'pad' \(nn.ReplicationPad1d\): cannot stream: it fills the padding from the sequence itself"),
    ("zeros_after", Wrap(lambda s, x: s.conv(torch.cat([x.transpose(1, 2), x.new_zeros(x.size(0), 4, 2)], 2)),
                         conv=nn.Conv1d(4, 3, 3)),
     r"module 'conv' \(nn.Conv1d\): is not causal: .* padded by 0 at the start"),
    ("zeros_on_channels", Wrap(lambda s, x: s.conv(torch.cat([x.new_zeros(x.size(0), 2, x.size(1)),
                                                              x.transpose(1, 2)], 1)), conv=nn.Conv1d(6, 3, 1)),
     r"operation 'cat' \(cat\): joins zeros with \[B, F, T\] along a feature axis; zeros join a stream's tensor only "
     r"on the time axis"),
    ("zeros_before_time_not_last", Wrap(lambda s, x: s.conv(torch.cat([x.new_zeros(x.size(0), 2, 4), x], 1)),
                                        conv=nn.Conv1d(4, 3, 3)),
     r"operation 'cat' \(cat\): joins zeros with \[B, T, F\] along the time axis, which is not last"),
    ("zeros_fixed_batch", Wrap(lambda s, x: s.conv(torch.cat([x.new_zeros(2, 4, 2), x.transpose(1, 2)], 2)),
                               conv=nn.Conv1d(4, 3, 3)),
     r"operation 'cat' \(cat\): joins zeros of size \(2, 4, 2\) with \[B, F, T\] of size \('B', 4, 'T'\): they "
     r"must have its size on every axis but time \(the batch as x.size\(0\)\)"),
    ("zeros_unused", Wrap(lambda s, x: torch.relu(torch.cat([x.new_zeros(x.size(0), 4, 2), x.transpose(1, 2)], 2))),
     r"operation 'cat' \(cat\): pads the time axis, and the padded sequence is not read by a Conv1d"),
]  # fmt: skip


@pytest.mark.parametrize(("module", "pattern"), [r[1:] for r in TORCH_REFUSALS], ids=[r[0] for r in TORCH_REFUSALS])
def test_non_causal_convolutions_are_refused(module: Any, pattern: str) -> None:
    with pytest.raises(rnnstream.RnnstreamError, match=pattern):
        rnnstream.from_torch(module, SEQ)


# -- ONNX: the same TCNs exported by torch.onnx.export ---------------------------------------------


def _export(module: Any, path: Path, dynamo: bool) -> Path:
    x = torch.zeros(2, 4, 5) if not isinstance(module, Wrap) else SEQ
    if dynamo:
        pytest.importorskip("onnxscript")
        shapes = ({0: torch.export.Dim("B"), 1: torch.export.Dim("T")},)
        torch.onnx.export(module, (x,), str(path), input_names=["x"], dynamic_shapes=shapes, verbose=False)
    else:
        torch.onnx.export(module, (x,), str(path), input_names=["x"], dynamo=False,
                          dynamic_axes={"x": {0: "B", 1: "T"}})  # fmt: skip
    return path


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_exported_tcn_equals_pytorch_and_onnx_runtime(case: TorchCase, dynamo: bool, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    module = randomize(case.make(), seed=4)
    path = _export(module, tmp_path / f"{case.name}.onnx", dynamo)
    model = rnnstream.load(path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for T in LENGTHS:
        x = sequence_input(case, BATCH, T, seed=T)
        assert_matches(model, reference_outputs(case, module, x), x.numpy())
        assert_matches(model, [torch.from_numpy(y) for y in session.run(None, {"x": x.numpy()})], x.numpy())


ONNX_REFUSALS = {
    "symmetric_padding": r"\(Conv\): is not causal: its last 2 outputs read inputs that have not arrived yet",
    "short_chomp": r"\(Slice\): slices .* of the output of ONNX node .* \(Conv\), which has 2 steps of padding",
    "same": r"\(Conv\): is not causal: .* each output reads 1 future steps",
    "stride": r"\(Conv\): strides=2 .* changes the step rate",
    "long_pad": r"\(Conv\): is padded by 3 at the start, .* shifting the time axis",
    "reflect": r"\(Pad\): mode='reflect' fills the padding from the sequence itself",
    "pad_unused": r"\(Pad\): pads the time axis, and the padded tensor is not read by a Conv",
}


@pytest.mark.parametrize("name", sorted(ONNX_REFUSALS))
def test_non_causal_onnx_convolutions_are_refused(name: str, tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    module = next(r[1] for r in TORCH_REFUSALS if r[0] == name)
    path = _export(module, tmp_path / f"{name}.onnx", dynamo=False)
    with pytest.raises(rnnstream.RnnstreamError, match=ONNX_REFUSALS[name]):
        rnnstream.load(path)
