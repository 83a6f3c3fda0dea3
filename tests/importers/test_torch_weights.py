"""Weights as forward computes them (issue #20): Bai et al.'s TCN with weight_norm-wrapped Conv1d and Linear, both
weight_norm flavours (the parametrization and the legacy pre-hook), chomped or padded, equal to PyTorch step by
step (T = 1, 7, 50, within 1e-5), never read from the tensor a legacy hook left behind; pruned weights; other
parametrizations and hooks refused by name, with the way to bake them in."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest

import rnnstream

torch = pytest.importorskip("torch")
nn = torch.nn
nnf = torch.nn.functional
prune = pytest.importorskip("torch.nn.utils.prune")

from tests.importers.test_torch_conformance import assert_matches, batch_first  # noqa: E402
from tests.importers.test_torch_refusals import Wrap  # noqa: E402
from tests.importers.torch_models import (  # noqa: E402
    TorchCase,
    WeightNormTCN,
    randomize,
    reference_outputs,
    sequence_input,
    weight_norm,
)

LENGTHS = (1, 7, 50)
BATCH = 3
FORMS = [(flavour, chomp) for flavour in ("parametrization", "legacy") for chomp in (True, False)]


def _check(case: TorchCase, module: nn.Module, model: rnnstream.StreamModel) -> None:
    for T in LENGTHS:
        x = sequence_input(case, BATCH, T, seed=T)
        assert_matches(model, reference_outputs(case, module, x), batch_first(case, x))


@pytest.mark.parametrize(("flavour", "chomp"), FORMS, ids=[f"{f}-{'chomp' if c else 'pad'}" for f, c in FORMS])
def test_weight_norm_tcn_equals_pytorch(flavour: str, chomp: bool) -> None:
    case = TorchCase("tcn", lambda: WeightNormTCN(flavour, chomp))
    module = randomize(case.make(), seed=7)
    model = rnnstream.from_torch(module, sequence_input(case, 2, 4, seed=0))
    assert [n.layer.kind for n in model.graph.nodes].count("causal_conv1d") == 5
    _check(case, module, model)


def test_a_legacy_weight_is_computed_from_g_and_v_not_read_from_the_stale_tensor(tmp_path: Path) -> None:
    """The legacy hook sets module.weight only when the module runs: after randomize (or load_state_dict) it is
    stale, and rnnstream reads g and v."""
    case = TorchCase("tcn", lambda: WeightNormTCN("legacy", chomp=True))
    trained = randomize(case.make(), seed=8)
    torch.save(trained.state_dict(), tmp_path / "tcn.pt")
    fresh = case.make().eval()
    stale = fresh.head.weight.detach().clone()
    model = rnnstream.from_torch(fresh, sequence_input(case, 2, 4, seed=0), checkpoint=tmp_path / "tcn.pt")
    assert torch.equal(fresh.head.weight, stale)  # the hook has not run since the load
    _check(case, trained, model)


class Normalised(nn.Module):
    """weight_norm over other dims: dim=None (one norm) on a Linear, dim=1 on a Conv1d; and on an LSTM's weights."""

    def __init__(self, flavour: str) -> None:
        super().__init__()
        wn = weight_norm(flavour)
        self.conv = wn(nn.Conv1d(5, 4, 2), dim=1)
        self.lstm = wn(nn.LSTM(4, 6, batch_first=True), name="weight_hh_l0")
        self.head = wn(nn.Linear(6, 3), dim=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(nnf.pad(x.transpose(1, 2), (1, 0))).transpose(1, 2)
        return self.head(self.lstm(h)[0])


@pytest.mark.parametrize("flavour", ["parametrization", "legacy"])
def test_weight_norm_over_other_dims_and_on_an_lstm(flavour: str) -> None:
    case = TorchCase("normalised", lambda: Normalised(flavour))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the legacy hook on an LSTM: its weights are not flattened
        module = randomize(case.make(), seed=9)
        _check(case, module, rnnstream.from_torch(module, sequence_input(case, 2, 4, seed=0)))


def test_pruned_weights_are_orig_times_mask() -> None:
    case = TorchCase("pruned", lambda: nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 2)))
    module = randomize(case.make(), seed=10)
    prune.l1_unstructured(module[0], "weight", amount=0.5)
    prune.random_unstructured(module[2], "bias", amount=0.5)
    with torch.no_grad():
        module[0].weight_orig.mul_(1.5)  # module[0].weight is stale until the next call
    _check(case, module, rnnstream.from_torch(module, sequence_input(case, 2, 4, seed=0)))


def _refusals() -> list[tuple[str, Any, str]]:
    param = nn.utils.parametrizations
    return [
        ("spectral_norm_legacy", Wrap(lambda s, x: s.lin(x), lin=nn.utils.spectral_norm(nn.Linear(4, 3))),
         r"module 'lin' \(nn.Linear\): its 'weight' is not a parameter but a tensor set on the module .*from "
         r"weight_orig, weight_u.*remove_spectral_norm"),
        ("spectral_norm", Wrap(lambda s, x: s.lin(x), lin=param.spectral_norm(nn.Linear(4, 3))),
         r"module 'lin' \(nn.Linear\): its 'weight' is computed by the parametrizations \['_SpectralNorm'\] .*"
         r"remove_parametrizations\(module, 'weight'\)"),
        ("orthogonal_conv", Wrap(lambda s, x: s.conv(nnf.pad(x.transpose(1, 2), (1, 0))),
                                 conv=param.orthogonal(nn.Conv1d(4, 4, 2))),
         r"module 'conv' \(nn.Conv1d\): its 'weight' is computed by the parametrizations \['_Orthogonal'\]"),
        ("weight_norm_then_more", Wrap(lambda s, x: s.lin(x), lin=param.orthogonal(param.weight_norm(nn.Linear(4, 4)))),
         r"computed by the parametrizations \['_WeightNorm', '_Orthogonal'\] .*; rnnstream reads weight_norm only"),
    ]  # fmt: skip


@pytest.mark.parametrize(("name", "module", "message"), _refusals(), ids=[r[0] for r in _refusals()])
def test_other_computed_weights_are_refused_by_name(name: str, module: Any, message: str) -> None:
    with pytest.raises(rnnstream.UnsupportedLayerError, match=message):
        rnnstream.from_torch(module, torch.zeros(2, 5, 4))
