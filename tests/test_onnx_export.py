"""StreamModel.export_onnx: the exported step model, run by ONNX Runtime, equals rnnstream step by step."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import rnnstream
from rnnstream.graph import GraphBuilder
from rnnstream.layers.dense import Dense
from rnnstream.layers.layer import Layer, TensorSpec
from rnnstream.layers.recurrent import GRU, LSTM, SimpleRNN

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


def _w(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.normal(0.0, 0.5, shape).astype(np.float32)


def _chain(layers: list[Layer], features: int) -> rnnstream.StreamModel:
    g = GraphBuilder()
    t = g.add_input("x", TensorSpec((features,)))
    outs = [t]
    for layer in layers:
        outs = g.add_node(layer.name, layer, [outs[0]])
    return rnnstream.StreamModel(g.build(outs[:1], ["y"]))


def _models() -> dict[str, rnnstream.StreamModel]:
    rng = np.random.default_rng(5)
    return {
        "lstm_dense": _chain([LSTM("l", Wx=_w(rng, 3, 28), Wh=_w(rng, 7, 28), b=_w(rng, 28)),
                              Dense("d", W=_w(rng, 7, 2), b=_w(rng, 2), activation="sigmoid")], 3),
        "gru_after_gru_before": _chain([
            GRU("a", Wx=_w(rng, 3, 15), Wh=_w(rng, 5, 15), bx=_w(rng, 15), bh=_w(rng, 15), reset_after=True),
            GRU("b", Wx=_w(rng, 5, 12), Wh=_w(rng, 4, 12), bx=_w(rng, 12), bh=None, reset_after=False),
            Dense("d", W=_w(rng, 4, 3), b=None, activation="softmax")], 3),
        "simple_rnn_relu": _chain([
            SimpleRNN("s", Wx=_w(rng, 3, 6), Wh=_w(rng, 6, 6), b=_w(rng, 6), activation="relu"),
            Dense("d", W=_w(rng, 6, 2), b=_w(rng, 2), activation="tanh")], 3),
    }  # fmt: skip


@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("name", ["lstm_dense", "gru_after_gru_before", "simple_rnn_relu", "seed"])
def test_onnx_runtime_steps_like_rnnstream(name: str, batch: int, tmp_path: Path) -> None:
    model = rnnstream.load(rnnstream.demo.SEED_MODEL) if name == "seed" else _models()[name]
    path = tmp_path / "step.onnx"
    model.export_onnx(path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    features = model.inputs[0].spec.shape[0]
    rng = np.random.default_rng(batch)
    state = model.initial_state(batch)
    for _ in range(12):  # each step from rnnstream's state, so rounding differences do not compound
        x = rng.normal(0, 1, (batch, features)).astype(np.float32)
        y_onnx, rows = session.run(None, {model.inputs[0].name: x, "state": np.array(state.rows)})
        y, state = model.step(x, state)
        np.testing.assert_allclose(y_onnx, y, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(rows, state.rows, rtol=1e-5, atol=1e-5)


def _feature_layers() -> rnnstream.StreamModel:
    """An LSTM's output through every feature-axis layer the export writes, each branch an output."""
    from rnnstream.layers.elementwise import ConstantOp
    from rnnstream.layers.features import FeatureReduce, FeatureSlice
    from rnnstream.layers.ops import ExpandDims
    from rnnstream.layers.reshape import Permute, Reshape

    rng = np.random.default_rng(8)
    g = GraphBuilder()
    (h, *_) = g.add_node("l", LSTM("l", Wx=_w(rng, 3, 32), Wh=_w(rng, 8, 32), b=_w(rng, 32)), [g.add_input("x",
                         TensorSpec((3,)))])  # fmt: skip
    (grid,) = g.add_node("grid", Reshape("grid", shape=(2, 4)), [h])  # (B, 2, 4)

    def chain(t: int, *layers: Layer) -> int:
        for layer in layers:
            (t,) = g.add_node(layer.name, layer, [t])
        return t

    c = rng.uniform(1.5, 2.5, (8,)).astype(np.float32)  # (c - h) / c stays in (1/3, 5/3): divided into
    outputs = [
        chain(grid, Permute("swap", perm=(1, 0)), FeatureSlice("odd", index=((1, None, 2),)),
              Reshape("flat", shape=(4,)), Dense("d", W=_w(rng, 4, 2), b=_w(rng, 2), activation="tanh")),
        chain(grid, FeatureSlice("last_row_reversed", index=(-1, (None, None, -1)))),
        chain(grid, FeatureSlice("window", index=((0, 1, None), (-3, -1, None)))),
        chain(grid, FeatureReduce("mean", op="mean", axes=(-1,), keepdims=True)),
        chain(grid, FeatureReduce("sum", op="sum", axes=(-2, -1), keepdims=False)),
        chain(grid, FeatureReduce("max", op="max", axes=(-2,), keepdims=False)),
        chain(h, FeatureReduce("min", op="min", axes=(-1,), keepdims=True)),
        chain(h, ConstantOp("rsub", op="rsub", constant=c), ConstantOp("div", op="div", constant=c),
              ConstantOp("rdiv", op="rdiv", constant=np.float32(3.0)), ConstantOp("add", op="add", constant=c),
              ConstantOp("mul", op="mul", constant=c[:1]), ConstantOp("sub", op="sub", constant=c),
              ExpandDims("column", axis=-1)),
    ]
    return rnnstream.StreamModel(g.build(outputs, [f"y{i}" for i in range(len(outputs))]))


@pytest.mark.parametrize("batch", [1, 4])
def test_feature_layers_step_like_rnnstream(batch: int, tmp_path: Path) -> None:
    model = _feature_layers()
    model.export_onnx(tmp_path / "step.onnx")
    session = ort.InferenceSession(str(tmp_path / "step.onnx"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(batch)
    state = model.initial_state(batch)
    for _ in range(12):
        x = rng.normal(0, 1, (batch, 3)).astype(np.float32)
        *ys_onnx, rows = session.run(None, {"x": x, "state": np.array(state.rows)})
        ys, state = model.step(x, state)
        assert len(ys_onnx) == len(ys) == 8
        for ours, theirs in zip(ys, ys_onnx, strict=True):
            assert ours.shape == theirs.shape
            np.testing.assert_allclose(theirs, ours, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(rows, state.rows, rtol=1e-5, atol=1e-5)


def test_keras_reshape_and_permute_export(tmp_path: Path) -> None:
    """A Keras model with Reshape and Permute of the features (issue #20) exports and steps like rnnstream."""
    keras = pytest.importorskip("keras")
    from tests.zoo import randomize

    L = keras.layers
    inp = L.Input((None, 4))
    h = L.Reshape((-1, 2, 4))(L.LSTM(8, return_sequences=True)(inp))
    keras_model = keras.Model(inp, L.Dense(3)(L.Reshape((-1, 8))(L.Permute((1, 3, 2))(h))))
    randomize(keras_model, seed=2)
    keras_model.save(tmp_path / "model.keras")
    model = rnnstream.load(tmp_path / "model.keras")
    model.export_onnx(tmp_path / "step.onnx")
    session = ort.InferenceSession(str(tmp_path / "step.onnx"), providers=["CPUExecutionProvider"])
    state = model.initial_state(3)
    for x in np.random.default_rng(4).normal(0, 1, (7, 3, 4)).astype(np.float32):
        y_onnx, rows = session.run(None, {model.inputs[0].name: x, "state": np.array(state.rows)})
        y, state = model.step(x, state)
        np.testing.assert_allclose(y_onnx, y, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(rows, state.rows, rtol=1e-5, atol=1e-5)


def test_state_parts_layout(tmp_path: Path) -> None:
    model = _models()["lstm_dense"]
    model.export_onnx(tmp_path / "parts.onnx", state="parts")
    session = ort.InferenceSession(str(tmp_path / "parts.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["x", "l.h", "l.c"]
    assert [o.name for o in session.get_outputs()] == ["y", "l.h.new", "l.c.new"]
    rng = np.random.default_rng(3)
    state = model.initial_state(2)
    h = c = np.zeros((1, 2, 7), np.float32)
    for _ in range(5):
        x = rng.normal(0, 1, (2, 3)).astype(np.float32)
        y_onnx, h, c = session.run(None, {"x": x, "l.h": h, "l.c": c})
        y, state = model.step(x, state)
        np.testing.assert_allclose(y_onnx, y, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(np.concatenate([h[0], c[0]], axis=1), state.rows, rtol=1e-5, atol=1e-5)


def test_layers_it_cannot_export_are_named(tmp_path: Path) -> None:
    from rnnstream.layers.norm import LayerNorm

    rng = np.random.default_rng(0)
    model = _chain([LayerNorm("norm", gamma=_w(rng, 3), beta=_w(rng, 3), epsilon=1e-3)], 3)
    with pytest.raises(rnnstream.UnsupportedLayerError, match=r"'norm'.*not exported yet"):
        model.export_onnx(tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()
