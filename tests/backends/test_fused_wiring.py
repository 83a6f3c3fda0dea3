"""The one-call step's wiring: the kernel's step_wired equals Wiring.items + step_all to the bit, steps inputs
it does not take as they are by the general path, and refuses a wiring out of range."""

from __future__ import annotations

import numpy as np
import pytest

import rnnstream
from rnnstream.backends import fused
from rnnstream.backends.fused_wiring import Wiring
from tests.test_stepper import _two_outputs

pytestmark = pytest.mark.skipif(not fused.available(), reason="the fused kernel is not built")


def _models(rng: np.random.Generator) -> dict[str, rnnstream.StreamModel]:
    return {
        "seed": rnnstream.load(rnnstream.demo.SEED_MODEL, backend="fused"),
        "two-outputs": _two_outputs(rng, "fused"),  # an output in the state's columns, one of a Dense
    }


def _by_items(backend: fused.FusedBackend, xs: list[np.ndarray], state: np.ndarray) -> list[np.ndarray]:
    assert backend.wiring is not None
    new_state = np.empty_like(state)
    items, outputs = backend.wiring.items(xs, new_state)
    backend._kernel.step_all(items, state, new_state, backend.threads)
    return [*outputs, new_state]


@pytest.mark.parametrize("batch", [0, 1, 5, 300])
def test_step_wired_equals_the_items_path_exactly(batch: int, rng: np.random.Generator) -> None:
    for name, model in _models(rng).items():
        backend = model.backend
        assert isinstance(backend, fused.FusedBackend) and backend._wired is not None, name
        features = model.inputs[0].spec.shape
        state = rng.normal(0, 0.5, (batch, model.state_size)).astype(np.float32)
        x = rng.normal(0, 1.5, (batch, *features)).astype(np.float32)
        outputs, new_state = backend.step([x], state)
        for ours, theirs in zip([*outputs, new_state], _by_items(backend, [x], state), strict=True):
            assert ours.shape == theirs.shape and np.array_equal(ours, theirs), name


def test_inputs_not_float32_rows_take_the_general_path(rng: np.random.Generator) -> None:
    """Rows with a stride between their floats, or float64 rows, are not the kernel's as they are:
    step_wired answers None and the backend converts them, with the same outputs."""
    model = rnnstream.load(rnnstream.demo.SEED_MODEL, backend="fused")
    backend = model.backend
    assert isinstance(backend, fused.FusedBackend)
    state = model.initial_state(3).rows
    wide = rng.normal(0, 1, (3, 8)).astype(np.float32)
    strided = wide[:, ::2]
    assert backend._kernel.step_wired(backend._wired, [strided], state, 1) is None
    assert backend._kernel.step_wired(backend._wired, [strided.astype(np.float64)], state, 1) is None
    expected, _ = backend.step([np.ascontiguousarray(strided)], state)
    for x in (strided, strided.astype(np.float64)):
        outputs, _ = backend.step([x], state)
        assert np.array_equal(outputs[0], expected[0])


def test_a_wiring_out_of_range_is_refused() -> None:
    model = rnnstream.load(rnnstream.demo.SEED_MODEL, backend="fused")
    backend = model.backend
    assert isinstance(backend, fused.FusedBackend) and backend.wiring is not None
    nodes, units, inputs, outputs = backend.wiring.for_kernel()
    plan = nodes[0][0]
    for bad in [
        ((plan, 5, -1),),  # a source past the inputs and Dense outputs
        ((plan, (4, 2), -1),),  # columns backwards
        ((plan, None, 3),),  # a Dense output that is not there
    ]:
        with pytest.raises(ValueError):
            backend._kernel.wire(bad, units, inputs, outputs)
    with pytest.raises(ValueError):
        backend._kernel.wire(nodes, units, inputs, (9,))
    with pytest.raises(ValueError):
        backend._kernel.wire(nodes, units, 65, outputs)  # more inputs than a step holds
    assert isinstance(backend.wiring, Wiring)
