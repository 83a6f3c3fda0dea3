"""from_torch refuses what cannot stream or what it cannot read, naming the node and the reason, and a bad
call changes nothing; checkpoints are read with weights_only and checked key by key."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import rnnstream

torch = pytest.importorskip("torch")
nn = torch.nn
nnf = torch.nn.functional


class Wrap(nn.Module):
    """A module whose forward is ``fn(self, x)``, with whatever submodules ``parts`` names."""

    def __init__(self, fn: Callable[..., Any], **parts: nn.Module) -> None:
        super().__init__()
        self.fn = fn
        for name, part in parts.items():
            setattr(self, name, part)

    def forward(self, x: Any) -> Any:
        return self.fn(self, x)


SEQ = torch.zeros(2, 5, 4)
STEP = torch.zeros(2, 4)

REFUSALS = [
    ("bidirectional", Wrap(lambda s, x: s.rnn(x)[0], rnn=nn.LSTM(4, 3, batch_first=True, bidirectional=True)), SEQ,
     r"module 'rnn' \(nn.LSTM\): cannot stream: bidirectional=True reads the sequence from its end"),
    ("first_step", Wrap(lambda s, x: s.rnn(x)[0][:, 0], rnn=nn.GRU(4, 3, batch_first=True)), SEQ,
     r"operation 'getitem_\d+' \(getitem\): takes time step 0 of \[B, T, F\]: .*only the last step \(\[-1\]\)"),
    ("flip", Wrap(lambda s, x: s.rnn(torch.flip(x, [1]))[0], rnn=nn.RNN(4, 3, batch_first=True)), SEQ,
     r"operation 'flip' \(flip\): cannot stream: it reverses the sequence"),
    ("mean_over_time", Wrap(lambda s, x: s.rnn(x)[0].mean(dim=1), rnn=nn.LSTM(4, 3, batch_first=True)), SEQ,
     r"operation 'mean' \(mean\): cannot stream: mean over time: it needs the whole sequence"),
    ("attention", Wrap(lambda s, x: s.att(x, x, x)[0], att=nn.MultiheadAttention(4, 1, batch_first=True)), SEQ,
     r"module 'att' \(nn.MultiheadAttention\): cannot stream: it attends over every time step"),
    ("cell_on_sequence", Wrap(lambda s, x: s.cell(x), cell=nn.GRUCell(4, 3)), SEQ,
     r"module 'cell' \(nn.GRUCell\): takes one step \[B, F\], but is called on \[B, T, F\]"),
    ("sequence_module_on_a_step", Wrap(lambda s, x: s.rnn(x)[0], rnn=nn.LSTM(4, 3)), STEP,
     r"module 'rnn' \(nn.LSTM\): is called on one time step \[B, F\]; .*use nn.LSTMCell"),
    ("loop_over_time", Wrap(lambda s, x: [s.cell(x[:, t]) for t in range(x.size(1))][-1], cell=nn.GRUCell(4, 3)), SEQ,
     r"Wrap.forward cannot be traced by torch.fx .*write forward for one step \[B, F\]"),
    ("raw_parameter", Wrap(lambda s, x: x @ s.lin.weight.T, lin=nn.Linear(4, 3)), STEP,
     r"forward uses the tensor 'lin.weight' directly; .*wrap the computation in such a module"),
    ("unknown_module", Wrap(lambda s, x: s.conv(x), conv=nn.Conv2d(1, 1, 1)), SEQ,
     r"module 'conv' \(nn.Conv2d\): is not a module rnnstream knows. Supported: .*nn.LSTM"),
    ("dropout_in_eval", Wrap(lambda s, x: nnf.dropout(x, 0.5)), STEP,
     r"operation 'dropout' \(dropout\): dropout with training=True is random at inference"),
    ("squeeze_without_dim", Wrap(lambda s, x: s.rnn(x)[0][:, -1:].squeeze(), rnn=nn.GRU(4, 3, batch_first=True)), SEQ,
     r"squeeze\(\) without a dim would also squeeze a batch of one stream"),
    ("add_a_size", Wrap(lambda s, x: x + x.size(0)), STEP,
     r"operation 'add' \(add\): add with a size, device or dtype is not supported"),
    ("slice_features", Wrap(lambda s, x: s.rnn(x)[0][..., :2], rnn=nn.GRU(4, 3, batch_first=True)), SEQ,
     r"indexes or slices a feature axis of \[B, T, F\]"),
    ("conflicting_batch_first",
     Wrap(lambda s, x: s.b(s.a(x)[0])[0], a=nn.LSTM(4, 3, batch_first=True), b=nn.LSTM(3, 3)), SEQ,
     r"module 'b' \(nn.LSTM\): batch_first=False, but its input is laid out \[B, T, F\]"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "module", "example", "message"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_refusal_names_the_node_and_the_reason(name: str, module: nn.Module, example: Any, message: str) -> None:
    module.train()
    with pytest.raises(rnnstream.UnsupportedLayerError, match=message):
        rnnstream.from_torch(module, example)
    assert module.training  # the module's mode is given back, even when the import fails


class StatefulInput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.GRU(4, 3, batch_first=True)

    def forward(self, x: Any, h0: Any) -> Any:
        return self.rnn(x, h0)[0]


def test_an_initial_state_from_an_input_is_refused() -> None:
    with pytest.raises(rnnstream.UnsupportedLayerError, match=r"is given an initial state \(hx\) computed in forward"):
        rnnstream.from_torch(StatefulInput(), (SEQ, torch.zeros(1, 2, 3)))


def test_forward_needs_an_example_for_every_input_without_default() -> None:
    with pytest.raises(rnnstream.UnsupportedLayerError, match=r"needs argument 'h0', but example_input has only 1"):
        rnnstream.from_torch(StatefulInput(), SEQ)


def test_what_is_not_a_module_or_an_example() -> None:
    with pytest.raises(rnnstream.UnsupportedLayerError, match=r"expects a torch.nn.Module, got str"):
        rnnstream.from_torch("model.pt", SEQ)
    with pytest.raises(rnnstream.UnsupportedLayerError, match="example_input must be a tensor or a tuple of tensors"):
        rnnstream.from_torch(nn.Linear(4, 3), [[0.0] * 4])
    with pytest.raises(rnnstream.UnsupportedLayerError, match=r"input 'input' has dtype torch.bool"):
        rnnstream.from_torch(nn.Linear(4, 3), torch.zeros(2, 4, dtype=torch.bool))


def _net() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2))


@pytest.mark.parametrize(
    ("state", "message"),
    [
        (lambda sd: {k: v for k, v in sd.items() if k != "2.bias"}, r"missing keys \['2.bias'\], unexpected keys \[\]"),
        (lambda sd: {**sd, "3.weight": torch.zeros(1)}, r"missing keys \[\], unexpected keys \['3.weight'\]"),
        (lambda sd: {**sd, "0.weight": torch.zeros(3, 5)}, r"mis-shaped weights: 0.weight: \(3, 5\), expected \(3, 4"),
        (lambda sd: [1, 2], r"holds a list, not a state_dict of tensors"),
    ],
)
def test_a_checkpoint_that_does_not_fit_is_refused_by_key(
    tmp_path: Path, state: Callable[[dict[str, Any]], Any], message: str
) -> None:
    path = tmp_path / "bad.pt"
    torch.save(state(_net().state_dict()), path)
    module = _net()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    with pytest.raises(rnnstream.ModelFileError, match=message):
        rnnstream.from_torch(module, STEP, checkpoint=path)
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())  # nothing was loaded


def test_a_pickled_module_is_not_unpickled(tmp_path: Path) -> None:
    path = tmp_path / "whole.pt"
    torch.save(_net(), path)  # a pickle of the module: code, which weights_only refuses to run
    with pytest.raises(rnnstream.ModelFileError, match=r"cannot be read with torch.load\(weights_only=True\)"):
        rnnstream.from_torch(_net(), STEP, checkpoint=path)
    with pytest.raises(rnnstream.ModelFileError, match="does not exist"):
        rnnstream.from_torch(_net(), STEP, checkpoint=tmp_path / "missing.pt")


@pytest.mark.parametrize("suffix", [".pt", ".pth"])
def test_load_of_a_checkpoint_points_to_from_torch(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"weights{suffix}"
    torch.save(_net().state_dict(), path)
    with pytest.raises(rnnstream.ModelFileError, match=r"holds weights but not the architecture.*from_torch\(module, "
                       r"example_input, checkpoint="):  # fmt: skip
        rnnstream.load(path)


def test_without_torch_from_torch_says_what_to_install() -> None:
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import rnnstream\n"
        "try:\n    rnnstream.from_torch(object(), None)\n"
        "except rnnstream.MissingDependencyError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "pip install 'rnnstream[torch]'" in out
