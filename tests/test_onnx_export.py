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
