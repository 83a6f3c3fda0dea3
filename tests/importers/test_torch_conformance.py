"""from_torch: rnnstream's step-by-step outputs equal real PyTorch's full-sequence outputs within 1e-5, for
every module kind and glue, lengths 1, 5 and 33, on the default backend and on the NumPy oracle; a
checkpoint read with weights_only; the step model exported from an imported model, in ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import rnnstream

torch = pytest.importorskip("torch")

from tests.importers.torch_models import (  # noqa: E402
    SEQUENCE_CASES,
    STEP_CASES,
    StepCase,
    TorchCase,
    randomize,
    reference_outputs,
    sequence_input,
)

LENGTHS = (1, 5, 33)
TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}
BATCH = 3


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module", params=SEQUENCE_CASES, ids=lambda c: c.name)
def imported(request: pytest.FixtureRequest) -> tuple[TorchCase, torch.nn.Module, rnnstream.StreamModel]:
    case: TorchCase = request.param
    module = randomize(case.make(), seed=len(case.name))
    return case, module, rnnstream.from_torch(module, sequence_input(case, 2, 4, seed=0))


def batch_first(case: TorchCase, x: torch.Tensor) -> np.ndarray:
    return (x if case.batch_first else x.transpose(0, 1)).numpy()


def assert_matches(model: rnnstream.StreamModel, expected: list[torch.Tensor], xs: np.ndarray) -> None:
    ys, state = model.run(xs, model.initial_state(xs.shape[0]))
    got = ys if isinstance(ys, list) else [ys]
    assert len(got) == len(expected)
    for ours, spec, theirs in zip(got, model.output_specs, expected, strict=True):
        reference = theirs.numpy()
        if spec.sequence:  # a per-step output: every step
            np.testing.assert_allclose(ours, reference, **TOLERANCE)
        else:  # a whole-sequence output: the last step's value
            np.testing.assert_allclose(ours[:, -1], reference, **TOLERANCE)
    assert state.batch_size == xs.shape[0]


@pytest.mark.parametrize("T", LENGTHS)
def test_sequence_module_equals_pytorch(
    imported: tuple[TorchCase, torch.nn.Module, rnnstream.StreamModel], T: int
) -> None:
    case, module, model = imported
    x = sequence_input(case, BATCH, T, seed=T)
    assert_matches(model, reference_outputs(case, module, x), batch_first(case, x))


def test_numpy_oracle_agrees(imported: tuple[TorchCase, torch.nn.Module, rnnstream.StreamModel]) -> None:
    case, module, model = imported
    x = sequence_input(case, BATCH, 5, seed=11)
    oracle = rnnstream.StreamModel(model.graph, backend="numpy")
    assert_matches(oracle, reference_outputs(case, module, x), batch_first(case, x))


def test_plain_layers_run_in_the_fused_kernel_and_variants_do_not(
    imported: tuple[TorchCase, torch.nn.Module, rnnstream.StreamModel],
) -> None:
    from rnnstream.backends import fused
    from rnnstream.layers.recurrent import Recurrent

    case, _, model = imported
    if not fused.available():
        pytest.skip("the fused kernel is not built")
    backend = fused.FusedBackend(model.graph)
    recurrent = {n.name: n.layer for n in model.graph.nodes if isinstance(n.layer, Recurrent)}
    for name, layer in recurrent.items():
        assert (name in backend.fused_nodes) == layer.plain, name
    assert any(not layer.plain for layer in recurrent.values()) == (case.name == "lstm2_proj")


def _step_reference(module: torch.nn.Module, xs: torch.Tensor) -> list[torch.Tensor]:
    """Run a step module over [B, T, ...] in a Python loop carrying its state: its outputs, [B, T, ...]."""
    state = None
    per_step: list[list[torch.Tensor]] = []
    with torch.no_grad():
        for t in range(xs.shape[1]):
            y, state = module(xs[:, t], state)
            flat = [y]
            stack = [state]
            while stack:
                item = stack.pop(0)
                if isinstance(item, torch.Tensor):
                    flat.append(item)
                else:
                    stack = list(item) + stack
            per_step.append(flat)
    return [torch.stack([step[k] for step in per_step], dim=1) for k in range(len(per_step[0]))]


@pytest.mark.parametrize("backend", ["auto", "numpy"])
@pytest.mark.parametrize("case", STEP_CASES, ids=lambda c: c.name)
def test_step_module_keeps_its_cells_state(case: StepCase, backend: str) -> None:
    module = randomize(case.make(), seed=3)
    example = torch.zeros(2, dtype=torch.int64) if case.vocab else torch.zeros(2, case.features)
    model = rnnstream.from_torch(module, example, backend=backend)
    generator = torch.Generator().manual_seed(5)
    for T in LENGTHS:
        shape = (BATCH, T) if case.vocab else (BATCH, T, case.features)
        if case.vocab:
            xs = torch.randint(0, case.vocab, shape, generator=generator)
        else:
            xs = torch.randn(shape, generator=generator)
        expected = _step_reference(module, xs)
        ys, _ = model.run(xs.numpy(), model.initial_state(BATCH))
        got = ys if isinstance(ys, list) else [ys]
        assert len(got) == len(expected)  # the output, then every cell's new state
        for ours, theirs in zip(got, expected, strict=True):
            np.testing.assert_allclose(ours, theirs.numpy(), **TOLERANCE)


def test_checkpoint_is_read_with_weights_only(tmp_path: Path) -> None:
    case = SEQUENCE_CASES[1]
    trained = randomize(case.make(), seed=21)
    path = tmp_path / "weights.pt"
    torch.save(trained.state_dict(), path)
    fresh = randomize(case.make(), seed=99)
    model = rnnstream.from_torch(fresh, sequence_input(case, 2, 3, seed=0), checkpoint=path)
    x = sequence_input(case, BATCH, 5, seed=4)
    assert_matches(model, reference_outputs(case, trained, x), batch_first(case, x))
    assert "weights.pt" in model.source


EXPORTABLE = [c for c in SEQUENCE_CASES if c.name in ("lstm2_time_first", "lstm3_batch_first", "gru2_time_first")]


@pytest.mark.parametrize("case", EXPORTABLE, ids=lambda c: c.name)
def test_imported_model_exports_a_step_model_onnx_runtime_agrees_with(case: TorchCase, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    model = rnnstream.from_torch(randomize(case.make(), seed=4), sequence_input(case, 2, 4, seed=0))
    model.export_onnx(tmp_path / "step.onnx")
    session = ort.InferenceSession(str(tmp_path / "step.onnx"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(8)
    state = model.initial_state(BATCH)
    for _ in range(6):  # each step from rnnstream's state, so rounding differences do not compound
        x = rng.normal(0, 1, (BATCH, case.features)).astype(np.float32)
        *ys_onnx, rows = session.run(None, {model.inputs[0].name: x, "state": np.array(state.rows)})
        ys, state = model.step(x, state)
        for ours, theirs in zip(ys if isinstance(ys, list) else [ys], ys_onnx, strict=True):
            np.testing.assert_allclose(theirs, ours, **TOLERANCE)
        np.testing.assert_allclose(rows, state.rows, **TOLERANCE)
