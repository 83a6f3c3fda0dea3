"""Stepper: model.stepper(batch_size) steps the same streams in a loop, equal to model.step to the bit."""

from __future__ import annotations

import numpy as np
import pytest

import rnnstream
from rnnstream import InputError, StateError
from rnnstream.backends import fused
from rnnstream.graph import GraphBuilder
from rnnstream.layers.dense import Dense
from rnnstream.layers.layer import TensorSpec
from rnnstream.layers.recurrent import GRU, LSTM


def _weights(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.normal(0.0, 0.5, shape).astype(np.float32)


def _two_outputs(rng: np.random.Generator, backend: str) -> rnnstream.StreamModel:
    """x → GRU(20) → LSTM(33) → Dense(3); outputs the LSTM's h (columns of the state) and the Dense's y."""
    g = GraphBuilder()
    x = g.add_input("x", TensorSpec((5,)))
    (h1,) = g.add_node("gru", GRU("gru", Wx=_weights(rng, 5, 60), Wh=_weights(rng, 20, 60), bx=_weights(rng, 60),
                                  bh=_weights(rng, 60), reset_after=True), [x])  # fmt: skip
    (h2,) = g.add_node("lstm", LSTM("lstm", Wx=_weights(rng, 20, 132), Wh=_weights(rng, 33, 132),
                                    b=_weights(rng, 132)), [h1])  # fmt: skip
    (y,) = g.add_node("dense", Dense("dense", W=_weights(rng, 33, 3), b=_weights(rng, 3), activation="tanh"), [h2])
    return rnnstream.StreamModel(g.build([h2, y], ["h", "y"]), backend=backend)


def _models(rng: np.random.Generator) -> dict[str, rnnstream.StreamModel]:
    models = {
        "seed-numpy": rnnstream.load(rnnstream.demo.SEED_MODEL, backend="numpy"),
        "two-outputs-numpy": _two_outputs(rng, "numpy"),
    }
    if fused.available():
        models["seed-fused"] = rnnstream.load(rnnstream.demo.SEED_MODEL, backend="fused")
        models["seed-fused-bf16"] = rnnstream.load(rnnstream.demo.SEED_MODEL, backend="fused", precision="bf16")
        models["two-outputs-fused"] = _two_outputs(rng, "fused")
    return models


@pytest.mark.parametrize("T", [1, 7, 50])
@pytest.mark.parametrize("batch", [1, 3])
def test_the_stepper_equals_model_step_exactly(T: int, batch: int, rng: np.random.Generator) -> None:
    for name, model in _models(rng).items():
        features = model.inputs[0].spec.shape
        xs = rng.normal(0, 1.5, (T, batch, *features)).astype(np.float32)
        stepper = model.stepper(batch_size=batch)
        state = model.initial_state(batch)
        for x in xs:
            ours = stepper(x)
            theirs, state = model.step(x, state)
            pairs = zip(ours if isinstance(ours, list) else [ours], theirs if isinstance(theirs, list) else [theirs],
                        strict=True)  # fmt: skip
            for a, b in pairs:
                assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b), name
        assert stepper.state == state, name


def test_the_seed_model_binds_its_whole_step() -> None:
    if not fused.available():
        pytest.skip("the fused kernel is not built")
    assert "bound fused" in repr(rnnstream.load(rnnstream.demo.SEED_MODEL, backend="fused").stepper())
    assert "unbound numpy" in repr(rnnstream.load(rnnstream.demo.SEED_MODEL, backend="numpy").stepper())


def test_token_inputs_step_unbound_and_equal(rng: np.random.Generator) -> None:
    """The text model (an Embedding of int64 token ids) runs backend.step inside the stepper."""
    model = rnnstream.load(rnnstream.demo.TEXT_MODEL)
    stepper, state = model.stepper(batch_size=2), model.initial_state(2)
    for tokens in rng.integers(0, model.token_ranges["chars"], (7, 2)):
        assert np.array_equal(stepper(tokens), model.step(tokens, state)[0])
        _, state = model.step(tokens, state)
    assert stepper.state == state


def test_state_round_trips(rng: np.random.Generator) -> None:
    """Start from a state, read it back, set it again: stepping on equals model.step from that state."""
    model = rnnstream.load(rnnstream.demo.SEED_MODEL)
    x = rng.normal(0, 1, (2, 4)).astype(np.float32)
    _, start = model.step(x, model.initial_state(2))
    stepper = model.stepper(batch_size=2, state=start)
    assert stepper.state == start
    y1 = stepper(x).copy()
    after = stepper.state
    stepper(x)
    stepper.state = after  # back one step
    assert stepper.state == after
    assert np.array_equal(stepper(x), model.step(x, after)[0])
    assert np.array_equal(y1, model.step(x, start)[0])
    snapshot = stepper.state
    stepper(x)
    assert snapshot != stepper.state  # a snapshot is a copy: stepping on leaves it


def test_bad_input_raises_and_changes_nothing(rng: np.random.Generator) -> None:
    model = rnnstream.load(rnnstream.demo.SEED_MODEL)
    stepper = model.stepper(batch_size=2)
    stepper(rng.normal(0, 1, (2, 4)).astype(np.float32))
    before = stepper.state
    for bad in [np.zeros((2, 3), np.float32), np.zeros((3, 4), np.float32), np.array([["a"] * 4] * 2), [1, 2]]:
        with pytest.raises(InputError):
            stepper(bad)
        assert stepper.state == before
    y = stepper(np.ones((2, 4), np.float64))  # cast like model.step
    assert np.array_equal(y, model.step(np.ones((2, 4), np.float32), before)[0])


def test_inputs_the_one_call_path_passes_over_step_the_same(rng: np.random.Generator) -> None:
    """The bound step copies a C-contiguous float32 x of the right shape in C; anything else (a transposed
    view, float64, nested lists, a read-only array) takes the checked path, with the same outputs."""
    model = rnnstream.load(rnnstream.demo.SEED_MODEL)
    stepper, state = model.stepper(batch_size=3), model.initial_state(3)
    base = rng.normal(0, 1, (4, 3)).astype(np.float32)
    frozen = base.T.copy()
    frozen.flags.writeable = False
    for x in [base.T, base.T.astype(np.float64), base.T.tolist(), frozen, np.ascontiguousarray(base.T)]:
        expected, state = model.step(x, state)
        assert np.array_equal(stepper(x), expected)
    assert stepper.state == state


def test_a_state_of_another_model_or_size_is_refused() -> None:
    seed, text = rnnstream.load(rnnstream.demo.SEED_MODEL), rnnstream.load(rnnstream.demo.TEXT_MODEL)
    with pytest.raises(StateError):
        seed.stepper(state=text.initial_state(1))
    with pytest.raises(InputError, match="holds 2 streams"):
        seed.stepper(batch_size=1, state=seed.initial_state(2))
    stepper = seed.stepper(batch_size=1)
    with pytest.raises(StateError):
        stepper.state = text.initial_state(1)
    with pytest.raises(InputError):
        stepper.state = seed.initial_state(3)
