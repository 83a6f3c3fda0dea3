"""rnnstream.load of ONNX files written by real exporters equals the source framework and ONNX Runtime within
1e-5: torch.onnx.export (TorchScript exporter, dynamo=False, and the default dynamo exporter), tf2onnx's
from_keras of tf.keras 2 models, and Keras 3's model.export(format="onnx"). What those exporters write as a
Loop (tf2onnx: SimpleRNN, a GRU with reset_after=False from tf.keras 2 or any GRU from Keras 3, an LSTM with
recurrent_dropout; Keras 3's own export: GRU) is refused with the reason."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import rnnstream

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

LENGTHS = (1, 5, 33)
TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}
BATCH = 3


def assert_outputs(model: rnnstream.StreamModel, xs: Any, expected: list[np.ndarray]) -> None:
    """rnnstream's run equals ``expected`` (full-sequence outputs, batch first): per-step outputs at every step,
    whole-sequence outputs at the last."""
    batch = (xs[0] if isinstance(xs, list) else xs).shape[0]
    ys, _ = model.run(xs, model.initial_state(batch))
    got = ys if isinstance(ys, list) else [ys]
    assert len(got) == len(expected)
    for ours, spec, theirs in zip(got, model.output_specs, expected, strict=True):
        np.testing.assert_allclose(ours if spec.sequence else ours[:, -1], theirs, **TOLERANCE)


# -- PyTorch ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def torch_cases() -> Any:
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    from tests.importers import torch_models

    return torch_models


EXPORTED = ["lstm1_batch_first", "lstm2_time_first", "gru2_time_first", "elman_pair", "token_tagger"]


@pytest.mark.parametrize("name", EXPORTED)
def test_torch_onnx_export_equals_pytorch_and_onnx_runtime(torch_cases: Any, name: str, tmp_path: Path) -> None:
    import torch

    case = next(c for c in torch_cases.SEQUENCE_CASES if c.name == name)
    module = torch_cases.randomize(case.make(), seed=6)
    time_axis = 1 if case.batch_first else 0
    path = tmp_path / f"{name}.onnx"
    torch.onnx.export(module, (torch_cases.sequence_input(case, 2, 4, seed=0),), str(path), input_names=["x"],
                      dynamo=False, dynamic_axes={"x": {1 - time_axis: "B", time_axis: "T"}})  # fmt: skip
    model = rnnstream.load(path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for T in LENGTHS:
        x = torch_cases.sequence_input(case, BATCH, T, seed=T)
        xs = (x if case.batch_first else x.transpose(0, 1)).numpy()
        assert_outputs(model, xs, [t.numpy() for t in torch_cases.reference_outputs(case, module, x)])
        onnx_outputs = [torch.from_numpy(y) for y in session.run(None, {"x": x.numpy()})]
        assert_outputs(model, xs, [t.numpy() for t in torch_cases.arrange(case, onnx_outputs)])
    if name == "lstm2_time_first":  # a subset on the NumPy oracle as well
        x = torch_cases.sequence_input(case, BATCH, 9, seed=2)
        expected = [t.numpy() for t in torch_cases.reference_outputs(case, module, x)]
        assert_outputs(rnnstream.load(path, backend="numpy"), x.transpose(0, 1).numpy(), expected)


def test_torch_dynamo_export_equals_pytorch(torch_cases: Any, tmp_path: Path) -> None:
    """The default exporter (torch.export based, opset 18+): zeros by Expand, Reshape of computed shapes."""
    import torch

    pytest.importorskip("onnxscript")
    case = next(c for c in torch_cases.SEQUENCE_CASES if c.name == "lstm1_batch_first")
    module = torch_cases.randomize(case.make(), seed=7)
    path = tmp_path / "dynamo.onnx"
    batch, time = torch.export.Dim("B"), torch.export.Dim("T")
    torch.onnx.export(module, (torch_cases.sequence_input(case, 2, 4, seed=0),), str(path), input_names=["x"],
                      dynamic_shapes=({0: batch, 1: time},), verbose=False)  # fmt: skip
    model = rnnstream.load(path)
    for T in LENGTHS:
        x = torch_cases.sequence_input(case, BATCH, T, seed=T)
        assert_outputs(model, x.numpy(), [t.numpy() for t in torch_cases.reference_outputs(case, module, x)])


# -- Keras (tf2onnx) -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tf_keras() -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    pytest.importorskip("tf2onnx")
    return pytest.importorskip("tf_keras")


def _randomize(model: Any, seed: int) -> Any:
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0, 0.4, w.shape).astype(np.float32) for w in model.get_weights()])
    return model


def _tf2onnx(model: Any, path: Path, shape: tuple[Any, ...], dtype: str) -> Path:
    import tensorflow as tf
    import tf2onnx

    spec = [tf.TensorSpec(shape, getattr(tf, dtype), name="x")]
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=17)
    path.write_bytes(proto.SerializeToString())
    return path


def _keras_sequence_model(k: Any) -> Any:
    L = k.layers
    x = L.Input((None, 4))
    h = L.LSTM(8, return_sequences=True)(x)
    h = L.Dense(6, activation="relu")(h)  # tf2onnx: Reshape [B·T, 8] → MatMul → Reshape back
    h = L.GRU(5, return_sequences=True)(h)  # reset_after=True: an ONNX GRU with linear_before_reset=1
    last = L.Dense(2, activation="sigmoid")(L.LSTM(4)(h))
    return k.Model(x, [L.Dense(3)(h), last])


def _keras_token_model(k: Any, dtype: str) -> Any:
    L = k.layers
    ids = L.Input((None,), dtype=dtype)
    h = L.Embedding(20, 6)(ids)
    h = L.LSTM(7, return_sequences=True)(h)
    return k.Model(ids, L.Dense(4, activation="softmax")(L.GRU(5)(h)))


def test_tf2onnx_of_a_tf_keras_sequence_model(tf_keras: Any, tmp_path: Path) -> None:
    keras_model = _randomize(_keras_sequence_model(tf_keras), seed=1)
    path = _tf2onnx(keras_model, tmp_path / "seq.onnx", (None, None, 4), "float32")
    model = rnnstream.load(path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for T in LENGTHS:
        xs = np.random.default_rng(T).normal(0, 1, (BATCH, T, 4)).astype(np.float32)
        expected = [np.asarray(y) for y in keras_model(xs)]
        assert_outputs(model, xs, expected)
        for ours, theirs in zip(expected, session.run(None, {"x": xs}), strict=True):
            np.testing.assert_allclose(ours, theirs, **TOLERANCE)


@pytest.mark.parametrize("dtype", ["int32", "float32"])
def test_tf2onnx_of_a_tf_keras_token_model(tf_keras: Any, tmp_path: Path, dtype: str) -> None:
    """Token ids as int32, or as floats that tf2onnx casts to integers (read as token ids)."""
    keras_model = _randomize(_keras_token_model(tf_keras, dtype), seed=2)
    path = _tf2onnx(keras_model, tmp_path / "tokens.onnx", (None, None), dtype)
    model = rnnstream.load(path)
    assert model.inputs[0].spec.dtype == "int64"
    for T in LENGTHS:
        ids = np.random.default_rng(T).integers(0, 20, (BATCH, T))
        assert_outputs(model, ids, [np.asarray(keras_model(ids.astype(dtype)))])


def test_tf2onnx_loops_are_refused_with_the_reason(tf_keras: Any, tmp_path: Path) -> None:
    L = tf_keras.layers
    keras_model = tf_keras.Sequential([L.Input((None, 4)), L.GRU(5, reset_after=False)])
    path = _tf2onnx(keras_model, tmp_path / "loop.onnx", (None, None, 4), "float32")
    with pytest.raises(rnnstream.UnsupportedLayerError, match=r"\(Loop\) cannot stream: it is control flow; Keras "
                       r"exporters .*GRU with reset_after=False from tf.keras 2.* load the Keras model file "
                       r"\(.keras / .h5\) itself instead"):  # fmt: skip
        rnnstream.load(path)


def test_keras3_export_of_an_lstm_model(tmp_path: Path) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    pytest.importorskip("tf2onnx")
    keras = pytest.importorskip("keras")
    L = keras.layers
    keras_model = keras.Sequential([L.Input((None, 4)), L.LSTM(6, return_sequences=True), L.Dense(3, activation="tanh"),
                                    L.LSTM(5), L.Dense(2)])  # fmt: skip
    _randomize(keras_model, seed=3)
    keras_model(np.zeros((1, 2, 4), np.float32))  # Keras 3 exports only a model that has been called
    keras_model.export(str(tmp_path / "k3.onnx"), format="onnx", verbose=False)
    model = rnnstream.load(tmp_path / "k3.onnx")
    for T in LENGTHS:
        xs = np.random.default_rng(T).normal(0, 1, (BATCH, T, 4)).astype(np.float32)
        assert_outputs(model, xs, [np.asarray(keras_model(xs))])
