"""PyTorch modules covering every module kind and glue from_torch reads, with random non-trivial weights.

Each ``TorchCase`` says how to make the module, an example input, and how its outputs are laid out
(time first or batch first) so a test can compare rnnstream's ``run`` with the module's own
full-sequence outputs. ``StepCase`` modules take one step and their state (``forward(x, state=None)``):
the reference carries the state through a Python loop, rnnstream keeps it itself.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as nnf


def randomize(module: nn.Module, seed: int) -> nn.Module:
    """Every parameter (biases too) drawn from N(0, 0.5²), so no gate or bias is trivially zero."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.5)
    return module.eval()


class StackedLSTM(nn.Module):
    """num_layers LSTM (optionally projected), a per-step head, and the last layer's h_n."""

    def __init__(self, layers: int, batch_first: bool, proj: int = 0) -> None:
        super().__init__()
        self.batch_first = batch_first
        self.lstm = nn.LSTM(5, 12, num_layers=layers, batch_first=batch_first, proj_size=proj)
        self.head = nn.Linear(proj or 12, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out, (h_n, c_n) = self.lstm(x)
        return self.head(out), h_n[-1], c_n[0]


class GRUTimeFirst(nn.Module):
    """Two GRU layers over [T, B, F], the last step of the output through a Linear and a softmax."""

    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(5, 9, num_layers=2)
        self.head = nn.Linear(9, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(x)
        return nnf.softmax(self.head(out[-1]), dim=-1)


class ElmanPair(nn.Module):
    """RNN(relu) then RNN(tanh, no bias); the stacked h_n returned whole (one output per layer)."""

    def __init__(self) -> None:
        super().__init__()
        self.relu_rnn = nn.RNN(5, 7, nonlinearity="relu", batch_first=True)
        self.tanh_rnn = nn.RNN(7, 6, num_layers=2, bias=False, batch_first=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out, _ = self.relu_rnn(x)
        out, h_n = self.tanh_rnn(out)
        return out, h_n


class TokenTagger(nn.Module):
    """Embedding → LSTM with a zero state built in forward → LayerNorm, dropout, residual add, concatenation."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(30, 8)
        self.lstm = nn.LSTM(8, 8, batch_first=True)
        self.norm = nn.LayerNorm(8)
        self.drop = nn.Dropout(0.3)
        self.proj = nn.Linear(16, 6)

    def forward(self, ids: torch.Tensor, h0: torch.Tensor | None = None) -> torch.Tensor:
        e = self.embed(ids)
        zeros = torch.zeros(1, ids.size(0), 8, device=ids.device)
        out, _ = self.lstm(e, (zeros, zeros) if h0 is None else h0)
        mixed = self.drop(self.norm(out)) + e
        joined = torch.cat([mixed, nnf.dropout(out, 0.5, training=self.training).tanh()], dim=-1)
        return self.proj(joined).contiguous()


class Activations(nn.Module):
    """Every activation module and function from_torch maps, on a per-step Linear of an LSTM."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(5, 6, batch_first=True)
        self.wide = nn.Linear(6, 6)
        self.modules_ = nn.ModuleList([
            nn.ReLU(), nn.Tanh(), nn.Sigmoid(), nn.GELU(), nn.SiLU(), nn.Mish(), nn.Softsign(), nn.SELU(),
            nn.ReLU6(), nn.Hardsigmoid(), nn.Hardswish(), nn.LogSigmoid(), nn.Tanhshrink(), nn.Softplus(),
            nn.Hardtanh(), nn.CELU(), nn.Softshrink(), nn.Hardshrink(), nn.ELU(), nn.ELU(alpha=0.5),
            nn.LeakyReLU(0.2), nn.Softmax(dim=-1), nn.LogSoftmax(dim=2), nn.Identity(),
        ])  # fmt: skip

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        z = self.wide(self.lstm(x)[0]) * 2.5 - 0.5
        outs = [m(z) for m in self.modules_]
        outs += [torch.relu(z), nnf.gelu(z), nnf.elu(z, alpha=2.0), nnf.leaky_relu(z, 0.1), z.sigmoid(),
                 torch.tanh(z), nnf.hardtanh(z), nnf.log_softmax(z, dim=-1), torch.softmax(z, -1),
                 1.5 / (z * z + 1.0), 3.0 - z]  # fmt: skip
        return outs


class CellStep(nn.Module):
    """A step module: LSTMCell → GRUCell → RNNCell → Linear; returns the output and the new state."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTMCell(4, 10)
        self.gru = nn.GRUCell(10, 7)
        self.rnn = nn.RNNCell(7, 5, nonlinearity="relu")
        self.head = nn.Linear(5, 2)

    def forward(self, x: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
        lstm_state, gru_state, rnn_state = (None, None, None) if state is None else state
        h, c = self.lstm(x, lstm_state)
        g = self.gru(h, gru_state)
        r = self.rnn(g, rnn_state)
        return self.head(r), ((h, c), g, r)


class TokenCellStep(nn.Module):
    """A step module on token ids: Embedding → GRUCell (no bias) → Linear → log_softmax."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(12, 6)
        self.cell = nn.GRUCell(6, 8, bias=False)
        self.head = nn.Linear(8, 12)

    def forward(self, token: torch.Tensor, h: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.cell(self.embed(token), h)
        return nnf.log_softmax(self.head(h), dim=-1), h


def weight_norm(flavour: str) -> Callable[..., nn.Module]:
    """``torch.nn.utils.parametrizations.weight_norm`` ("parametrization": original0 = g, original1 = v) or the
    legacy ``torch.nn.utils.weight_norm`` ("legacy": weight_g, weight_v and a forward pre-hook)."""
    if flavour == "parametrization":
        return nn.utils.parametrizations.weight_norm

    def legacy(module: nn.Module, name: str = "weight", dim: int | None = 0) -> nn.Module:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # deprecated for the parametrization, still common
            return nn.utils.weight_norm(module, name, dim)

    return legacy


class Chomp1d(nn.Module):
    """locuslab/TCN's chomp: drop the padding a symmetric Conv1d added at the end of the time axis."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, : -self.size].contiguous()


class TemporalBlock(nn.Module):
    """Bai et al.'s TCN block (locuslab/TCN): two weight-normalised dilated causal Conv1d, each made causal by a
    chomp (or by nn.ConstantPad1d before it) and followed by ReLU and dropout; a residual, with a 1×1 Conv1d
    downsample where the channels change."""

    def __init__(self, c_in: int, c_out: int, k: int, d: int, flavour: str, chomp: bool) -> None:
        super().__init__()
        wn, pad = weight_norm(flavour), (k - 1) * d
        layers: list[nn.Module] = []
        for c in (c_in, c_out):
            conv = wn(nn.Conv1d(c, c_out, k, padding=pad if chomp else 0, dilation=d))
            causal = [conv, Chomp1d(pad)] if chomp else [nn.ConstantPad1d((pad, 0), 0.0), conv]
            layers += [*causal, nn.ReLU(), nn.Dropout(0.2)]
        self.net = nn.Sequential(*layers)
        self.downsample = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else None
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T)
        res = x if self.downsample is None else self.downsample(x)
        return self.relu(self.net(x) + res)


class WeightNormTCN(nn.Module):
    """[B, T, 5] → transpose → TemporalBlocks (dilations 1 and 2; 5 → 6 channels, 6 → 6) → transpose → a
    weight-normalised Linear head per step."""

    def __init__(self, flavour: str, chomp: bool) -> None:
        super().__init__()
        self.tcn = nn.Sequential(TemporalBlock(5, 6, 3, 1, flavour, chomp), TemporalBlock(6, 6, 3, 2, flavour, chomp))
        self.head = weight_norm(flavour)(nn.Linear(6, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.tcn(x.transpose(1, 2)).transpose(1, 2))


@dataclass(frozen=True)
class TorchCase:
    name: str
    make: Callable[[], nn.Module]
    features: int = 5
    vocab: int = 0  # token ids below vocab instead of float features
    batch_first: bool = True
    onnx: bool = True  # torch.onnx.export (TorchScript exporter) handles it
    stacked: tuple[int, ...] = ()  # outputs that are a stacked h_n [layers, B, H]: one rnnstream output per layer


SEQUENCE_CASES = [
    TorchCase("lstm1_batch_first", lambda: StackedLSTM(1, True)),
    TorchCase("lstm2_time_first", lambda: StackedLSTM(2, False), batch_first=False),
    TorchCase("lstm3_batch_first", lambda: StackedLSTM(3, True)),
    TorchCase("lstm2_proj", lambda: StackedLSTM(2, True, proj=4), onnx=False),
    TorchCase("gru2_time_first", GRUTimeFirst, batch_first=False),
    TorchCase("elman_pair", ElmanPair, stacked=(1,)),
    TorchCase("token_tagger", TokenTagger, vocab=30),
    TorchCase("activations", Activations, onnx=False),
    TorchCase("weight_norm_tcn", lambda: WeightNormTCN("parametrization", chomp=True), onnx=False),
]


@dataclass(frozen=True)
class StepCase:
    name: str
    make: Callable[[], nn.Module]
    features: int = 4
    vocab: int = 0


STEP_CASES = [StepCase("cells", CellStep), StepCase("token_cell", TokenCellStep, vocab=12)]


def sequence_input(case: TorchCase, batch: int, T: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    shape = (batch, T) if case.batch_first else (T, batch)
    if case.vocab:
        return torch.randint(0, case.vocab, shape, generator=generator)
    return torch.randn((*shape, case.features), generator=generator)


def flat_outputs(value: Any) -> list[torch.Tensor]:
    """The module's outputs in from_torch's order (nested tuples flattened)."""
    if isinstance(value, torch.Tensor):
        return [value]
    return [t for item in value for t in flat_outputs(item)]


def reference_outputs(case: TorchCase, module: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The module's full-sequence outputs, batch first, with stacked states split into one per layer."""
    with torch.no_grad():
        return arrange(case, flat_outputs(module(x)))


def arrange(case: TorchCase, outputs: list[torch.Tensor]) -> list[torch.Tensor]:
    """Outputs of the module (or of its ONNX export), batch first, stacked states split into one per layer."""
    result = []
    for k, out in enumerate(outputs):
        if k in case.stacked:
            result += list(out.unbind(0))
        elif not case.batch_first and out.dim() >= 3:  # a per-step output [T, B, ...]
            result.append(out.transpose(0, 1))
        else:
            result.append(out)
    return result
