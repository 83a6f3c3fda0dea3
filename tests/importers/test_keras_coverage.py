"""Issue #20, model coverage: Reshape and Permute of feature axes, Rescaling, RNN(StackedRNNCells) and
models without a time axis, compared step by step with Keras 3 (.keras, .h5, live) and tf.keras 2 (.h5,
live) for T = 1, 7, 50; and the refusals that go with them, each naming the layer and the real reason."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import rnnstream
from rnnstream import UnsupportedLayerError
from rnnstream.importers.keras_context import LayerContext
from rnnstream.importers.keras_refusals import refusal
from tests.importers.test_keras_conformance import TOLERANCE
from tests.zoo import randomize

keras = pytest.importorskip("keras")

LENGTHS = (1, 7, 50)
BATCH = 3


@dataclass(frozen=True)
class Case:
    """A model over inputs of one step's ``shape``; ``masked`` feeds all-zero steps; ``tf_keras`` False
    for models tf.keras 2 cannot build."""

    name: str
    build: Callable[[Any], Any]
    shape: tuple[int, ...]
    masked: bool = False
    tf_keras: bool = True


def _model(k: Any, shape: tuple[int | None, ...], *layers: Any) -> Any:
    inp = k.layers.Input(shape)
    x = inp
    for layer in layers:
        x = layer(x)
    return k.Model(inp, x)


def multi_step_head(k: Any) -> Any:
    """The TF time-series tutorial's multi-step model: 6 future steps of 2 features from the last state."""
    L = k.layers
    return _model(k, (None, 4), L.LSTM(16), L.Dense(6 * 2), L.Reshape((6, 2)))


def per_step_reshape(k: Any) -> Any:
    L = k.layers
    return _model(k, (None, 4, 2), L.Reshape((-1, 8)), L.GRU(8, return_sequences=True), L.Dense(6),
                  L.Reshape((-1, 2, 3)), L.Dense(4, activation="tanh"))


def permute_features(k: Any) -> Any:
    L = k.layers
    return _model(k, (None, 2, 3), L.Permute((1, 3, 2)), L.Dense(5), L.Reshape((-1, 15)),
                  L.LSTM(5, return_sequences=True))


def whole_value_permute(k: Any) -> Any:
    L = k.layers
    return _model(k, (None, 3), L.SimpleRNN(8), L.Dense(6), L.Reshape((2, 3)), L.Permute((2, 1)), L.Dense(2))


def rescaling_normalization(k: Any) -> Any:
    L = k.layers
    return _model(k, (None, 3), L.Rescaling(0.5, offset=-1.0), L.Normalization(mean=[0.5, -1.0, 2.0],
                  variance=[4.0, 0.25, 1.0]), L.SimpleRNN(6, return_sequences=True), L.Rescaling(1 / 255.0))


def stacked_lstm_cells(k: Any) -> Any:
    L = k.layers
    return _model(k, (None, 5), L.RNN(L.StackedRNNCells([L.LSTMCell(8), L.LSTMCell(4)]), return_sequences=True))


def stacked_mixed_cells(k: Any) -> Any:
    """Mixed cells: their weight groups' names (gru_cell, simple_rnn_cell, lstm_cell) sort out of order."""
    L = k.layers
    cells = L.StackedRNNCells([L.GRUCell(6), L.SimpleRNNCell(5, use_bias=False), L.LSTMCell(4)])
    return _model(k, (None, 3), L.RNN(cells), L.Dense(2))


def eleven_cells(k: Any) -> Any:
    """simple_rnn_cell_10 sorts before simple_rnn_cell_2: the cells' order comes from the config."""
    L = k.layers
    cells = [L.SimpleRNNCell(3 + i % 3) for i in range(11)]
    return _model(k, (None, 2), L.RNN(L.StackedRNNCells(cells), return_sequences=True))


def stacked_cells_masked(k: Any) -> Any:
    L = k.layers
    cells = L.StackedRNNCells([L.LSTMCell(6), L.GRUCell(4)])
    return _model(k, (None, 3), L.Masking(), L.RNN(cells, return_sequences=True, zero_output_for_mask=True))


def stacked_cells_states(k: Any) -> Any:
    L = k.layers
    inp = L.Input((None, 3))
    out, *states = L.RNN(L.StackedRNNCells([L.LSTMCell(5), L.GRUCell(4)]), return_state=True)(inp)
    return k.Model(inp, [out, *k.tree.flatten(states)])


CASES = [
    Case("multi_step_head", multi_step_head, (4,)),
    Case("per_step_reshape", per_step_reshape, (4, 2)),
    Case("permute_features", permute_features, (2, 3)),
    Case("whole_value_permute", whole_value_permute, (3,)),
    Case("rescaling_normalization", rescaling_normalization, (3,)),
    Case("stacked_lstm_cells", stacked_lstm_cells, (5,)),
    Case("stacked_mixed_cells", stacked_mixed_cells, (3,)),
    Case("eleven_cells", eleven_cells, (2,)),
    Case("stacked_cells_masked", stacked_cells_masked, (3,), masked=True),
    Case("stacked_cells_states", stacked_cells_states, (3,), tf_keras=False),
]


def inputs(case: Case, T: int) -> np.ndarray:
    rng = np.random.default_rng(T)
    x = rng.normal(0.0, 1.0, (BATCH, T, *case.shape)).astype(np.float32)
    if case.masked:
        x[rng.random((BATCH, T)) < 0.3] = 0.0
    return x


def build_saved(k: Any, case: Case, seed: int, folder: Path, *names: str) -> Any:
    """``case``'s model built with Keras module ``k`` (seeded), random weights, saved in ``folder`` as ``names``."""
    k.utils.set_random_seed(seed)
    model = case.build(k)
    randomize(model, seed=len(case.name))
    for name in names:
        model.save(folder / name)
    return model


def assert_refused(model: Any, path: Path, message: str) -> None:
    """``model`` saved at ``path`` and live is refused with ``message`` (a regex), never called custom."""
    model.save(path)
    with pytest.raises(rnnstream.UnsupportedLayerError, match=message) as refused:
        rnnstream.load(path)
    assert "custom" not in str(refused.value)
    with pytest.raises(rnnstream.UnsupportedLayerError, match=message):
        rnnstream.from_keras(model)


def assert_matches(stream_model: rnnstream.StreamModel, model: Any, case: Case, T: int) -> None:
    """Per-step outputs equal Keras' at every step; a whole-sequence output equals Keras' at the last step."""
    x = inputs(case, T)
    out = model(x, training=False)
    expected = [np.asarray(o) for o in (out if isinstance(out, list | tuple) else [out])]
    ys, _ = stream_model.run(x, stream_model.initial_state(BATCH))
    got = ys if isinstance(ys, list) else [ys]
    assert len(got) == len(expected)
    for ours, theirs in zip(got, expected, strict=True):
        np.testing.assert_allclose(ours if theirs.ndim == ours.ndim else ours[:, -1], theirs, **TOLERANCE)


@pytest.fixture(scope="module", params=CASES, ids=lambda c: c.name)
def keras3(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Case, Any, Path]:
    case: Case = request.param
    folder = tmp_path_factory.mktemp(case.name)
    return case, build_saved(keras, case, 11, folder, "model.keras", "model.h5"), folder


@pytest.mark.parametrize("T", LENGTHS)
@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_keras3_file_steps_equal_keras(keras3: tuple[Case, Any, Path], suffix: str, T: int) -> None:
    case, model, folder = keras3
    assert_matches(rnnstream.load(folder / f"model{suffix}"), model, case, T)


def test_keras3_live_model_equals_keras(keras3: tuple[Case, Any, Path]) -> None:
    case, model, folder = keras3
    live = rnnstream.from_keras(model)
    assert live.fingerprint == rnnstream.load(folder / "model.keras").fingerprint
    assert_matches(live, model, case, 7)


@pytest.fixture(scope="module", params=[c for c in CASES if c.tf_keras], ids=lambda c: c.name)
def keras2(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Case, Any, Path]:
    tf_keras = pytest.importorskip("tf_keras")
    case: Case = request.param
    folder = tmp_path_factory.mktemp(case.name)
    return case, build_saved(tf_keras, case, 11, folder, "model.h5"), folder / "model.h5"


@pytest.mark.parametrize("T", LENGTHS)
def test_tf_keras2_h5_steps_equal_keras(keras2: tuple[Case, Any, Path], T: int) -> None:
    case, model, path = keras2
    stream_model = rnnstream.load(path)
    assert "Keras 2" in stream_model.source
    assert_matches(stream_model, model, case, T)
    if T == 7:
        assert_matches(rnnstream.from_keras(model), model, case, T)


def dense_without_time(k: Any) -> Any:
    """``Input((5,))``: no time axis, so each step is one independent call of the model."""
    L = k.layers
    return _model(k, (5,), L.Dense(6, activation="relu"), L.Reshape((3, 2)), L.Permute((2, 1)),
                  L.Rescaling(3.0, offset=0.25), L.Dense(2))


@pytest.mark.parametrize("T", LENGTHS)
@pytest.mark.parametrize("writer", ["keras", "tf_keras"])
def test_model_without_time_axis_streams_one_call_per_step(writer: str, T: int, tmp_path: Path) -> None:
    k = pytest.importorskip(writer)
    k.utils.set_random_seed(3)
    model = dense_without_time(k)
    randomize(model, seed=5)
    model.save(tmp_path / "model.h5")
    paths = [tmp_path / "model.h5"] + ([tmp_path / "model.keras"] if writer == "keras" else [])
    if writer == "keras":
        model.save(paths[1])
    x = np.random.default_rng(T).normal(0.0, 1.0, (BATCH, T, 5)).astype(np.float32)
    expected = np.stack([np.asarray(model(x[:, t], training=False)) for t in range(T)], axis=1)  # (B, T, 2, 3)
    for stream_model in [rnnstream.load(p) for p in paths] + [rnnstream.from_keras(model)]:
        assert stream_model.inputs[0].spec.describe() == "(B, 5)"
        ys, _ = stream_model.run(x, stream_model.initial_state(BATCH))
        np.testing.assert_allclose(ys, expected, **TOLERANCE)


def tf_keras_only_layers(k: Any) -> Any:
    L = k.layers
    return _model(k, (None, 4), L.Dense(6), L.ThresholdedReLU(theta=0.3), L.GRU(5, return_sequences=True))


def test_tf_keras2_thresholded_relu(tmp_path: Path) -> None:
    tf_keras = pytest.importorskip("tf_keras")
    case = Case("thresholded", tf_keras_only_layers, (4,))
    model = case.build(tf_keras)
    randomize(model, seed=9)
    model.save(tmp_path / "model.h5")
    for T in LENGTHS:
        assert_matches(rnnstream.load(tmp_path / "model.h5"), model, case, T)


def test_keras3_identity_layer(tmp_path: Path) -> None:
    case = Case("identity", lambda k: _model(k, (None, 3), k.layers.Identity(), k.layers.LSTM(4)), (3,))
    model = case.build(keras)
    randomize(model, seed=4)
    model.save(tmp_path / "model.keras")
    for T in LENGTHS:
        assert_matches(rnnstream.load(tmp_path / "model.keras"), model, case, T)


# -- refusals ---------------------------------------------------------------------------------------

L = keras.layers


def _refused(shape: tuple[int | None, ...], *layers: Any) -> Callable[[], Any]:
    return lambda: _model(keras, shape, *layers)


REFUSALS: list[tuple[str, Callable[[], Any], str]] = [
    ("reshape_mixes_time", _refused((None, 6), L.Reshape((-1, 4), name="mix")),
     r"'mix' \(Reshape\): target_shape \(-1, 4\) regroups .* mixes the time axis into the features"),
    ("reshape_flattens_fixed_length", _refused((7, 3), L.Reshape((21,), name="flat")),
     r"'flat' \(Reshape\).*mixes the time axis into the features"),
    ("reshape_fixed_first_axis", _refused((7, 6), L.Reshape((7, -1), name="fixed")),
     r"'fixed' \(Reshape\).*fixes the first axis.*Reshape\(\(-1, \.\.\.\)\)"),
    ("permute_moves_time", _refused((None, 2, 3), L.Permute((2, 1, 3), name="swap")),
     r"'swap' \(Permute\).*move the time axis"),
    ("rescaling_per_feature", _refused((None, 3), L.Rescaling([1.0, 2.0, 3.0], name="scale")),
     r"'scale' \(Rescaling\): scale \[1\.0, 2\.0, 3\.0\] is a per-feature array"),
    ("no_time_axis_into_rnn", _refused((5,), L.Reshape((5, 1)), L.LSTM(3, name="rnn")),
     r"'rnn' \(LSTM\): its input \(B, 5, 1\) has no time axis to step over"),
    ("image_layer", _refused((None, 4, 1), L.Conv2D(2, 3, padding="same", name="conv2d")),
     r"'conv2d' \(Conv2D\): cannot stream: its windows slide over axis 1, which is the time axis"),
    ("per_step_builtin", _refused((None, 4), L.UnitNormalization(name="unit")),
     r"'unit' \(UnitNormalization\): cannot stream: a per-step layer rnnstream has no step for yet"),
]


@pytest.mark.parametrize(("case", "build", "message"), REFUSALS, ids=[r[0] for r in REFUSALS])
@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_refused_with_the_real_reason(case: str, build: Callable[[], Any], message: str, suffix: str,
                                      tmp_path: Path) -> None:
    model = build()
    model.save(tmp_path / f"{case}{suffix}")
    with pytest.raises(UnsupportedLayerError, match=message) as refused:
        rnnstream.load(tmp_path / f"{case}{suffix}")
    assert "custom" not in str(refused.value)
    with pytest.raises(UnsupportedLayerError, match=message):
        rnnstream.from_keras(model)


def test_unknown_builtin_is_called_builtin_not_custom() -> None:
    ctx = LayerContext("spec", "MelSpectrogram", {}, [], [], 3, module="keras.layers")
    message = str(refusal(ctx, ["Dense"]))
    assert "'spec' (MelSpectrogram)" in message and "built-in Keras layer (keras.layers.MelSpectrogram)" in message
    assert "custom" not in message


def test_unknown_legacy_layer_does_not_claim_to_be_builtin() -> None:
    message = str(refusal(LayerContext("odd", "Doubler", {}, [], [], 2), ["Dense"]))
    assert "'odd' (Doubler)" in message and "If it is a custom layer" in message and "built-in Keras" not in message
