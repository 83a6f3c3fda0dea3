"""StreamModel's contract: pure steps, run == stepping, streams joining and leaving, state bytes,
and bad input that raises a clear error and changes nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import rnnstream
from rnnstream import InputError, State, StateError
from tests.zoo import two_inputs

keras = pytest.importorskip("keras")


@pytest.fixture(scope="module")
def seed() -> rnnstream.StreamModel:
    return rnnstream.load(rnnstream.demo.SEED_MODEL)


@pytest.fixture(scope="module")
def multi(tmp_path_factory: pytest.TempPathFactory) -> rnnstream.StreamModel:
    """Two inputs (values, token ids), two outputs."""
    keras.utils.set_random_seed(5)
    path = tmp_path_factory.mktemp("multi") / "model.keras"
    two_inputs(keras).save(path)
    return rnnstream.load(path)


def multi_inputs(rng: np.random.Generator, batch: int, T: int | None = None) -> dict[str, np.ndarray]:
    lead = (batch,) if T is None else (batch, T)
    return {
        "values": rng.normal(0, 1, (*lead, 3)).astype(np.float32),
        "tokens": rng.integers(0, 9, lead),
    }


def test_step_is_pure(seed: rnnstream.StreamModel, rng: np.random.Generator) -> None:
    state = seed.initial_state(3)
    _, state = seed.step(rng.normal(0, 1, (3, 4)).astype(np.float32), state)
    x = rng.normal(0, 1, (3, 4)).astype(np.float32)
    x_before, rows_before = x.copy(), state.rows.copy()
    y, new_state = seed.step(x, state)
    assert np.array_equal(x, x_before) and np.array_equal(state.rows, rows_before)
    assert new_state is not state and not np.array_equal(new_state.rows, state.rows)
    y_again, state_again = seed.step(x, state)
    assert np.array_equal(y, y_again) and state_again == new_state


def test_run_is_exactly_stepping(multi: rnnstream.StreamModel, rng: np.random.Generator) -> None:
    xs = multi_inputs(rng, batch=4, T=9)
    ys, final = multi.run(xs, multi.initial_state(4))
    state, stepped = multi.initial_state(4), []
    for t in range(9):
        y, state = multi.step({k: v[:, t] for k, v in xs.items()}, state)
        stepped.append(y)
    assert isinstance(ys, list) and len(ys) == len(multi.output_names) == 2
    for k in range(2):
        assert np.array_equal(ys[k], np.stack([s[k] for s in stepped], axis=1))
    assert final == state


def test_run_of_nothing_changes_nothing(seed: rnnstream.StreamModel) -> None:
    state = seed.initial_state(2)
    ys, after = seed.run(np.zeros((2, 0, 4), np.float32), state)
    assert ys.shape == (2, 0, 1) and after == state


def test_streams_join_and_leave(seed: rnnstream.StreamModel, rng: np.random.Generator) -> None:
    """Three streams advance together; one leaves, a new one joins: each equals its solo run."""
    xs = rng.normal(0, 1, (4, 6, 4)).astype(np.float32)
    solo = [seed.run(xs[i : i + 1], seed.initial_state(1))[0] for i in range(4)]
    state = seed.initial_state(3)
    for t in range(3):
        _, state = seed.step(xs[:3, t], state)
    state = State.concat([state.select([0, 2]), seed.initial_state(1)])  # stream 1 leaves, 3 joins
    joined = [0, 2, 3]
    for t in range(3, 6):
        y, state = seed.step(np.stack([xs[0, t], xs[2, t], xs[3, t - 3]]), state)
    for row, stream in enumerate(joined[:2]):
        np.testing.assert_allclose(y[row], solo[stream][0, 5], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(y[2], solo[3][0, 2], rtol=1e-6, atol=1e-6)


def test_state_bytes_round_trip(seed: rnnstream.StreamModel, rng: np.random.Generator) -> None:
    _, state = seed.run(rng.normal(0, 1, (2, 5, 4)).astype(np.float32), seed.initial_state(2))
    data = state.to_bytes()
    assert len(data) == 48 + 2 * seed.state_size * 4
    assert seed.state_from_bytes(data) == state


def test_state_of_another_model_is_refused(
    seed: rnnstream.StreamModel, multi: rnnstream.StreamModel, rng: np.random.Generator
) -> None:
    foreign = multi.initial_state(1)
    with pytest.raises(StateError, match="belongs to another model"):
        seed.state_from_bytes(foreign.to_bytes())
    with pytest.raises(StateError, match="belongs to another model"):
        seed.step(np.zeros((1, 4), np.float32), foreign)
    for bad in (b"", b"junk" * 20, seed.initial_state(1).to_bytes()[:-4]):
        with pytest.raises(StateError):
            seed.state_from_bytes(bad)


def test_fingerprint_depends_on_weights(tmp_path: Path) -> None:
    model = keras.Sequential([keras.layers.Input((None, 2)), keras.layers.GRU(3)])
    a = rnnstream.from_keras(model)
    assert rnnstream.from_keras(model).fingerprint == a.fingerprint
    weights = model.get_weights()
    weights[0] = weights[0] + 1e-3
    model.set_weights(weights)
    assert rnnstream.from_keras(model).fingerprint != a.fingerprint


def test_summary(seed: rnnstream.StreamModel) -> None:
    text = seed.summary()
    for expected in ("lstm1", "lstm2", "output", "h[0:100]", "c[400:600]", "283,001", seed.fingerprint[:16]):
        assert expected in text
    assert seed.parameter_count == 283_001 and seed.state_size == 600
    assert [s.part for s in seed.state_layout] == ["h", "c", "h", "c"]


BAD_SEED_INPUTS = [
    (np.zeros((2, 3), np.float32), "shape"),  # 3 features, not 4
    (np.zeros((2, 1, 4), np.float32), "shape"),  # a time axis where step takes none
    (np.zeros((3, 4), np.float32), "batch size 3"),
    (np.full((2, 4), "a"), "dtype"),
    (np.zeros((2, 4), bool), "dtype"),
    ([[1.0, 2.0], [3.0, 4.0]], "shape"),
]


@pytest.mark.parametrize(("x", "message"), BAD_SEED_INPUTS)
def test_bad_input_raises_and_changes_nothing(seed: rnnstream.StreamModel, x: object, message: str) -> None:
    state = seed.initial_state(2)
    _, state = seed.step(np.ones((2, 4), np.float32), state)
    before = state.rows.copy()
    with pytest.raises(InputError, match=message):
        seed.step(x, state)  # type: ignore[arg-type]
    assert np.array_equal(state.rows, before)


def test_non_finite_input_is_refused_when_checking(seed: rnnstream.StreamModel) -> None:
    state = seed.initial_state(2)
    x = np.ones((2, 4), np.float32)
    x[1, 2] = np.nan
    before = state.rows.copy()
    with pytest.raises(InputError, match=r"non-finite value nan at index \(1, 2\)"):
        seed.step(x, state, check_finite=True)
    with pytest.raises(InputError, match="non-finite"):
        seed.run(x[:, None, :], state, check_finite=True)
    assert np.array_equal(state.rows, before)
    y, _ = seed.step(x, state)  # unchecked: NaN flows through, as in Keras
    assert np.isnan(y[1, 0])


def test_bad_tokens_raise_and_change_nothing(multi: rnnstream.StreamModel, rng: np.random.Generator) -> None:
    state = multi.initial_state(2)
    _, state = multi.step(multi_inputs(rng, 2), state)
    before = state.rows.copy()
    values = np.zeros((2, 3), np.float32)
    cases = [
        ({"values": values, "tokens": np.array([1, 9])}, "token id 9 is out of range"),
        ({"values": values, "tokens": np.array([-1, 0])}, "token id -1 is out of range"),
        ({"values": values, "tokens": np.array([1.0, 2.0])}, "integer token ids"),
        ({"values": values}, "missing"),
        ({"values": values, "tokens": np.array([1, 2]), "extra": values}, "unknown"),
        ([values], "pass a list in that order or a dict"),
    ]
    for x, message in cases:
        with pytest.raises(InputError, match=message):
            multi.step(x, state)
        assert np.array_equal(state.rows, before)


def test_list_inputs_follow_input_order(multi: rnnstream.StreamModel, rng: np.random.Generator) -> None:
    x = multi_inputs(rng, 2)
    by_name, _ = multi.step(x, multi.initial_state(2))
    in_order, _ = multi.step([x[spec.name] for spec in multi.inputs], multi.initial_state(2))
    assert all(np.array_equal(a, b) for a, b in zip(by_name, in_order, strict=True))


@pytest.mark.parametrize("batch", [0, -1, "2", 1.5, True])
def test_initial_state_needs_a_positive_batch(seed: rnnstream.StreamModel, batch: object) -> None:
    with pytest.raises(InputError, match="batch_size"):
        seed.initial_state(batch)  # type: ignore[arg-type]


def test_identity_output_is_not_the_callers_array() -> None:
    model = keras.Sequential([keras.layers.Input((None, 2)), keras.layers.Dropout(0.5)])
    stream_model = rnnstream.from_keras(model)
    x = np.ones((1, 2), np.float32)
    y, _ = stream_model.step(x, stream_model.initial_state(1))
    y[0, 0] = 5.0
    assert x[0, 0] == 1.0
