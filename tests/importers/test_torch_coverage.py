"""from_torch on the shapes users write (issue #20): squeezed and reshaped heads, F.layer_norm and F.linear on the
module's own tensors, no-op tensor methods, wrapped modules and training checkpoints, each equal to PyTorch
step by step (T = 1, 7, 50, within 1e-5); and what is refused, by name and with the reason."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import rnnstream

torch = pytest.importorskip("torch")
nn = torch.nn
nnf = torch.nn.functional

from tests.importers.test_torch_conformance import TOLERANCE, assert_matches, batch_first  # noqa: E402
from tests.importers.test_torch_refusals import Wrap  # noqa: E402
from tests.importers.torch_models import (  # noqa: E402
    StackedLSTM,
    TorchCase,
    randomize,
    reference_outputs,
    sequence_input,
)

LENGTHS = (1, 7, 50)
BATCH = 3


class SqueezedHead(nn.Module):
    """LSTM → Linear(H, 1) → squeeze(-1): one value per step, [B, T]."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(5, 8, batch_first=True)
        self.head = nn.Linear(8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return self.head(out).squeeze(-1)


class LastValue(nn.Module):
    """GRU → the last step → Linear(H, 1) → squeeze(1): one value per sequence, [B]."""

    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(5, 7, num_layers=2, batch_first=True)
        self.head = nn.Linear(7, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(x)
        return torch.squeeze(self.head(out[:, -1, :]), 1)


class FunctionalNorm(nn.Module):
    """LSTM → F.layer_norm with the module's own gamma and beta → GRU → F.layer_norm without them → Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(5, 6, batch_first=True)
        self.gamma = nn.Parameter(torch.ones(6))
        self.beta = nn.Parameter(torch.zeros(6))
        self.gru = nn.GRU(6, 4, batch_first=True)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = nnf.layer_norm(self.lstm(x)[0], (6,), self.gamma, self.beta, eps=1e-3)
        g = self.gru(h)[0]
        return self.head(nnf.layer_norm(g, g.shape[-1:]))


class FunctionalLinear(nn.Module):
    """GRU → F.linear with nn.Parameters → tanh → F.linear with a submodule's weight and bias."""

    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(5, 6, batch_first=True)
        self.w = nn.Parameter(torch.zeros(9, 6))
        self.b = nn.Parameter(torch.zeros(9))
        self.head = nn.Linear(9, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.tanh(nnf.linear(self.gru(x)[0], self.w, self.b))
        return nnf.linear(h, self.head.weight, self.head.bias), nnf.linear(h, self.head.weight)


class Tutorial(nn.Module):
    """The tutorial LSTM: zeros(...).requires_grad_() initial states, detached, and fc(out[:, -1, :])."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(5, 10, num_layers=2, batch_first=True)
        self.fc = nn.Linear(10, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h0 = torch.zeros(2, x.size(0), 10).requires_grad_()
        c0 = torch.zeros(2, x.size(0), 10).requires_grad_()
        out, (_hn, _cn) = self.lstm(x, (h0.detach(), c0.detach()))
        return self.fc(out[:, -1, :].contiguous().detach()).squeeze(-1)


class Grouped(nn.Module):
    """Linear → view(B, T, 2, 4) → softmax per group → flatten(2) → Linear; and reshape(..., -1) to one value."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.RNN(5, 6, batch_first=True)
        self.wide = nn.Linear(6, 8)
        self.head = nn.Linear(8, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out, _ = self.rnn(x)
        groups = self.wide(out).view(x.size(0), x.size(1), 2, 4).softmax(dim=-1)
        flat = groups.flatten(2)
        return flat, self.head(flat).reshape(-1, x.size(1))


class TimeFirstFlatten(nn.Module):
    """[T, B, F]: GRU → reshape(T, B, 3, 2) → nn.Flatten(2) → Linear → unsqueeze/squeeze round trips."""

    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(5, 6)
        self.flat = nn.Flatten(start_dim=2)
        self.head = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(x)
        split = out.reshape(out.size(0), out.size(1), 3, 2)
        y = self.head(self.flat(split)).unsqueeze(-1) * 2.0
        return y.squeeze(-1).squeeze(2)  # squeeze(2) of a feature axis of size 4: a no-op, as in torch


class UnitFeatures(nn.Module):
    """A feature axis of size 1 squeezed and put back: Linear(H, 1) → view(B, T) → unsqueeze(-1) → Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(5, 4, batch_first=True, proj_size=2)
        self.score = nn.Linear(2, 1)
        self.head = nn.Linear(1, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.score(self.lstm(x)[0]).view(x.size(0), x.size(1))
        return self.head(torch.sigmoid(s).unsqueeze(-1))


class TokenScores(nn.Module):
    """Token ids → Embedding → GRU → Linear(H, 1) → flatten(1) of the last step: [B, 1] → stays [B, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 6)
        self.gru = nn.GRU(6, 5, batch_first=True)
        self.head = nn.Linear(5, 1)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.gru(self.embed(ids))[0]
        return self.head(out).squeeze(2), self.head(out[:, -1]).flatten(1)


class FeatureStats(nn.Module):
    """Reductions over feature axes per step: mean, sum (keepdim), amax, amin, and a mean over two feature axes."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(5, 8, batch_first=True)
        self.head = nn.Linear(1, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out, _ = self.lstm(x)
        grid = out.view(x.size(0), x.size(1), 2, 4)
        return (out.mean(-1), self.head(torch.sum(out, dim=2, keepdim=True)), out.amax(-1),
                torch.amin(grid, dim=-1, keepdim=True), torch.mean(grid, dim=(2, 3)), out[:, -1].sum(1))  # fmt: skip


COVERAGE = [
    TorchCase("squeezed_head", SqueezedHead),
    TorchCase("last_value", LastValue),
    TorchCase("functional_norm", FunctionalNorm),
    TorchCase("functional_linear", FunctionalLinear),
    TorchCase("tutorial", Tutorial),
    TorchCase("grouped", Grouped),
    TorchCase("time_first_flatten", TimeFirstFlatten, batch_first=False),
    TorchCase("unit_features", UnitFeatures),
    TorchCase("token_scores", TokenScores, vocab=20),
    TorchCase("feature_stats", FeatureStats),
]


@pytest.mark.parametrize("case", COVERAGE, ids=lambda c: c.name)
def test_model_equals_pytorch_step_by_step(case: TorchCase) -> None:
    module = randomize(case.make(), seed=len(case.name))
    model = rnnstream.from_torch(module, sequence_input(case, 2, 4, seed=0))
    for T in LENGTHS:
        x = sequence_input(case, BATCH, T, seed=T)
        assert_matches(model, reference_outputs(case, module, x), batch_first(case, x))


def _wrappers() -> list[tuple[str, Any]]:
    return [("nn.DataParallel", nn.DataParallel), ("torch.compile", torch.compile),
            ("nn.DataParallel", lambda m: torch.compile(nn.DataParallel(m)))]  # fmt: skip


@pytest.mark.parametrize(("name", "wrap"), _wrappers(), ids=["data_parallel", "compile", "compiled_data_parallel"])
def test_a_wrapped_module_is_unwrapped(name: str, wrap: Any) -> None:
    case = COVERAGE[0]
    inner = randomize(case.make(), seed=5)
    model = rnnstream.from_torch(wrap(inner), sequence_input(case, 2, 4, seed=0))
    assert f"(unwrapped from {name})" in model.source
    for T in LENGTHS:
        x = sequence_input(case, BATCH, T, seed=T)
        assert_matches(model, reference_outputs(case, inner, x), batch_first(case, x))


@pytest.fixture
def process_group() -> Any:
    """A real one-process gloo process group (what DistributedDataParallel needs), destroyed afterwards."""
    dist = torch.distributed
    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", rank=0, world_size=1, init_method=f"tcp://127.0.0.1:{port}")
    yield
    dist.destroy_process_group()


def test_a_distributed_data_parallel_lstm_is_unwrapped(process_group: Any) -> None:
    case = TorchCase("ddp_lstm", lambda: StackedLSTM(2, True))
    ddp = nn.parallel.DistributedDataParallel(randomize(case.make(), seed=6))
    model = rnnstream.from_torch(ddp, sequence_input(case, 2, 4, seed=0))
    assert model.source.endswith("(unwrapped from nn.DistributedDataParallel)")
    for T in LENGTHS:
        x = sequence_input(case, BATCH, T, seed=T)
        assert_matches(model, reference_outputs(case, ddp.eval(), x), batch_first(case, x))


@pytest.mark.parametrize(
    ("save", "said"),
    [
        (lambda m: {"epoch": 3, "model_state_dict": nn.DataParallel(m).state_dict(), "optimizer_state_dict": {}},
         "ckpt.pt['model_state_dict'] (prefix 'module.' removed)"),
        (lambda m: {"state_dict": torch.compile(m).state_dict(), "loss": 0.5}, "ckpt.pt['state_dict'] (prefix "
         "'_orig_mod.' removed)"),
        (lambda m: nn.DataParallel(m).state_dict(), "ckpt.pt (prefix 'module.' removed)"),
    ],
    ids=["model_state_dict_data_parallel", "state_dict_compiled", "bare_data_parallel"],
)  # fmt: skip
def test_a_training_checkpoint_is_loaded_and_named(tmp_path: Path, save: Any, said: str) -> None:
    case = COVERAGE[2]
    trained = randomize(case.make(), seed=21)
    torch.save(save(trained), tmp_path / "ckpt.pt")
    model = rnnstream.from_torch(randomize(case.make(), seed=99), sequence_input(case, 2, 4, seed=0),
                                 checkpoint=tmp_path / "ckpt.pt")  # fmt: skip
    assert model.source.endswith(said)
    for T in LENGTHS:
        x = sequence_input(case, BATCH, T, seed=T)
        assert_matches(model, reference_outputs(case, trained, x), batch_first(case, x))


class ScalarStep(nn.Module):
    """A step module: GRUCell → Linear(H, 1) → squeeze(-1), one value per stream."""

    def __init__(self) -> None:
        super().__init__()
        self.cell = nn.GRUCell(4, 6)
        self.head = nn.Linear(6, 1)

    def forward(self, x: torch.Tensor, h: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.cell(x, h)
        return self.head(h).squeeze(-1), h


def test_a_step_module_with_a_squeezed_head_equals_pytorch() -> None:
    module = randomize(ScalarStep(), seed=2)
    model = rnnstream.from_torch(module, torch.zeros(2, 4))
    for T in LENGTHS:
        xs = torch.randn(BATCH, T, 4, generator=torch.Generator().manual_seed(T))
        h, ys = None, []
        with torch.no_grad():
            for t in range(T):
                y, h = module(xs[:, t], h)
                ys.append(y)
        (ours, _), _ = model.run(xs.numpy(), model.initial_state(BATCH))
        np.testing.assert_allclose(ours, torch.stack(ys, 1).numpy(), **TOLERANCE)


class LearnedStart(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.GRU(4, 3, batch_first=True)
        self.h0 = nn.Parameter(torch.zeros(1, 1, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rnn(x, self.h0.expand(1, x.size(0), 3).contiguous())[0]


SEQ = torch.zeros(2, 5, 4)
GRU = nn.GRU(4, 3, batch_first=True)
REFUSALS = [
    ("squeeze_batch", Wrap(lambda s, x: s.rnn(x)[0].squeeze(0), rnn=GRU),
     r"operation 'squeeze' \(squeeze\): squeezes axis 0 of \[B, T, F\], the batch axis, whose size changes at run"),
    ("view_folds_time", Wrap(lambda s, x: s.rnn(x)[0].reshape(x.size(0), -1), rnn=GRU),
     r"operation 'reshape' \(reshape\): reshapes \[B, T, F\] \(sizes \('B', 'T', 3\)\) to \('B', -1\): batch and "
     r"time must stay"),
    ("view_merges_batch_and_time", Wrap(lambda s, x: s.rnn(x)[0].view(-1, 3), rnn=GRU), r"batch and time must stay"),
    ("view_wrong_size", Wrap(lambda s, x: s.rnn(x)[0].view(x.size(0), x.size(1), 2, 2), rnn=GRU),
     r"\('B', 'T', 2, 2\): batch and time must stay"),
    ("flatten_time", Wrap(lambda s, x: s.rnn(x)[0].flatten(1), rnn=GRU),
     r"operation 'flatten' \(flatten\): flattens axes 1..-1 of \[B, T, F\]: it folds time into the features"),
    ("parameter_arithmetic", Wrap(lambda s, x: s.rnn(x)[0] * s.lin.weight[0], rnn=GRU, lin=nn.Linear(3, 3)),
     r"forward uses the tensor 'lin.weight' directly; rnnstream reads the module's tensors as the weight and bias of "
     r"F.linear / F.layer_norm"),
    ("learned_initial_state", LearnedStart(), r"forward uses the tensor 'h0' directly"),
    ("linear_weight_misfit", Wrap(lambda s, x: nnf.linear(s.rnn(x)[0], s.lin.weight), rnn=GRU, lin=nn.Linear(4, 2)),
     r"operation 'linear' \(linear\): its weight 'lin.weight' \(2, 4\) does not fit the features of \[B, T, F\]"),
    ("linear_computed_weight", Wrap(lambda s, x: nnf.linear(x, x), rnn=GRU),
     r"operation 'linear' \(linear\): its weight is a tensor computed in forward; it must be a 2-D tensor of the "
     r"module \(an nn.Parameter\)"),
    ("layer_norm_two_axes", Wrap(lambda s, x: nnf.layer_norm(s.rnn(x)[0], (5, 3)), rnn=GRU),
     r"operation 'layer_norm' \(layer_norm\): normalises over \(5, 3\) of \[B, T, F\].*only the last \(feature\)"),
    ("raw_error_is_wrapped", Wrap(lambda s, x: torch.cat(s.rnn(x)[0], -1), rnn=GRU),
     r"operation 'cat' \(cat\): cannot be read \(TypeError: .*\); its arguments are not the kind rnnstream reads"),
    ("centred", Wrap(lambda s, x: s.rnn(x)[0] - s.rnn(x)[0].mean(-1, keepdim=True), rnn=GRU),
     r"operation 'sub' \(sub\): sub of \[B, T, F\] \(sizes \('B', 'T', 3\)\) and \[B, T, F\] \(sizes "
     r"\('B', 'T', 1\)\): broadcasting between two tensors of the model is not supported"),
    ("gate_of_one", Wrap(lambda s, x: s.rnn(x)[0] * torch.sigmoid(s.lin(s.rnn(x)[0])), rnn=GRU, lin=nn.Linear(3, 1)),
     r"operation 'mul' \(mul\): mul of .* \(sizes \('B', 'T', 1\)\): broadcasting between two tensors"),
    ("last_step_over_time", Wrap(lambda s, x: s.rnn(x)[0] * s.rnn(x)[0][:, -1:], rnn=GRU),
     r"operation 'mul' \(mul\): mul of \[B, T, F\] and \[B, 1, F\] broadcasts one time step over the whole "
     r"sequence"),
    ("divide_tensors", Wrap(lambda s, x: s.rnn(x)[0] / s.rnn(x)[0], rnn=GRU),
     r"operation 'truediv' \(truediv\): div of two tensors of the model is not supported"),
    ("sum_over_time", Wrap(lambda s, x: s.rnn(x)[0].sum(1), rnn=GRU),
     r"operation 'sum\w*' \(sum\): cannot stream: sum over time: it needs the whole sequence"),
    ("mean_of_everything", Wrap(lambda s, x: torch.mean(s.rnn(x)[0]), rnn=GRU),
     r"operation 'mean' \(mean\): mean over every axis mixes the streams of the batch"),
    ("max_with_indices", Wrap(lambda s, x: s.rnn(x)[0].max(-1)[0], rnn=GRU),
     r"operation 'max\w*' \(max\): cannot stream: over time .*returns indices.*use amax / amin"),
    ("torchscript_module", torch.jit.script(nn.Sequential(nn.Linear(4, 3))),
     r"RecursiveScriptModule is a TorchScript module \(torch.jit.script / torch.jit.trace\): .*torch.fx cannot "
     r"trace. Pass the nn.Module itself"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "module", "message"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_refusal_names_the_thing_and_the_reason(name: str, module: nn.Module, message: str) -> None:
    with pytest.raises(rnnstream.UnsupportedLayerError, match=message):
        rnnstream.from_torch(module, SEQ)


def _net() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 3), nn.Tanh())


@pytest.mark.parametrize(
    ("save", "message"),
    [
        (lambda p: torch.jit.save(torch.jit.script(_net()), p),
         r"is a TorchScript archive \(torch.jit.save\): compiled code, not a state_dict. Build the module's class"),
        (lambda p: torch.save(_net(), p),
         r"cannot be read with torch.load\(weights_only=True\): it holds a pickled Python object "
         r"\(torch.nn.modules.container.Sequential\), e.g. a whole module saved with torch.save\(module\)"),
        (lambda p: torch.save({"epoch": 1, "weights": {"a": 1}}, p),
         r"is a dict without a state_dict: its keys are \['epoch', 'weights'\], and none of \['model_state_dict'"),
        (lambda p: torch.save({"model_state_dict": nn.DataParallel(nn.Linear(4, 3)).state_dict()}, p),
         r"does not fit Sequential: missing keys \['0.bias', '0.weight'\], unexpected keys \['bias', 'weight'\]"),
    ],
    ids=["torchscript_file", "pickled_module", "no_state_dict", "wrong_keys_after_prefix"],
)  # fmt: skip
def test_a_checkpoint_refusal_names_what_the_file_is(tmp_path: Path, save: Any, message: str) -> None:
    path = tmp_path / "model.pt"
    save(path)
    with pytest.raises(rnnstream.ModelFileError, match=message):
        rnnstream.from_torch(_net(), torch.zeros(1, 4), checkpoint=path)


def test_loading_a_torchscript_file_says_what_it_is(tmp_path: Path) -> None:
    scripted = torch.jit.script(torch.nn.Linear(3, 2))
    path = tmp_path / "model.pt"
    torch.jit.save(scripted, str(path))
    with pytest.raises(rnnstream.ModelFileError, match=r"model.pt is a TorchScript archive .*from_torch"):
        rnnstream.load(path)
