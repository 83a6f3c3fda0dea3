"""What cannot stream is refused at load time with the layer's name and the reason; bad files get a
clear ModelFileError. Nothing in a file is ever executed."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

import rnnstream
from rnnstream import ModelFileError, RnnstreamError, UnsupportedLayerError

keras = pytest.importorskip("keras")
L = keras.layers


def seq_model(*layers: Any, features: int = 3) -> Any:
    return keras.Sequential([L.Input((None, features)), *layers])


def attention_model() -> Any:
    inp = L.Input((None, 4))
    return keras.Model(inp, L.Attention(name="attend")([inp, inp]))


def multi_head_model() -> Any:
    inp = L.Input((None, 4))
    return keras.Model(inp, L.MultiHeadAttention(2, 4, name="mha")(inp, inp))


def nested_model() -> Any:
    inner = keras.Sequential([L.Input((None, 3)), L.LSTM(4, return_sequences=True)], name="inner")
    inp = L.Input((None, 3))
    return keras.Model(inp, L.Dense(1)(inner(inp)))


def hand_made_step_model() -> Any:
    """The seed blog's functional model with the LSTM state as inputs."""
    inp, h, c = L.Input((None, 3)), L.Input((4,)), L.Input((4,))
    out, h2, c2 = L.LSTM(4, return_state=True, name="lstm_with_state")(inp, initial_state=[h, c])
    return keras.Model([inp, h, c], [out, h2, c2])


def time_concat_model() -> Any:
    inp = L.Input((None, 3))
    return keras.Model(inp, L.Concatenate(axis=1, name="join_time")([inp, inp]))


@keras.saving.register_keras_serializable(package="tests")
class Doubler(L.Layer):
    def call(self, x: Any) -> Any:
        return x * 2


REFUSALS: list[tuple[str, Callable[[], Any], str]] = [
    ("bidirectional", lambda: seq_model(L.Bidirectional(L.LSTM(4), name="bi")), r"'bi'.*backward half"),
    ("go_backwards", lambda: seq_model(L.GRU(4, go_backwards=True, name="back")), r"'back'.*go_backwards"),
    ("attention", attention_model, r"'attend'.*attends over every time step"),
    ("multi_head_attention", multi_head_model, r"'mha'.*attends over every time step"),
    ("lambda", lambda: seq_model(L.Lambda(lambda x: x * 2, name="code")), r"'code'.*Python code"),
    ("custom_layer", lambda: seq_model(Doubler(name="doubler")), r"'doubler'.*custom layer"),
    ("nested_model", nested_model, r"'inner'.*nested"),
    ("initial_state_inputs", hand_made_step_model, r"'lstm_with_state'.*initial_state"),
    ("global_pooling", lambda: seq_model(L.GlobalAveragePooling1D(name="pool")), r"'pool'.*pools over time"),
    ("same_padding_conv", lambda: seq_model(L.Conv1D(2, 3, padding="same", name="conv")), r"'conv'.*causal"),
    ("strided_conv", lambda: seq_model(L.Conv1D(2, 2, strides=2, padding="causal", name="s")), r"'s'.*stride"),
    ("time_axis_concat", time_concat_model, r"'join_time'.*batch or time axis"),
]


@pytest.mark.parametrize(("case", "build", "message"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_refused_at_load_with_reason(case: str, build: Callable[[], Any], message: str, tmp_path: Path) -> None:
    model = build()
    path = tmp_path / f"{case}.keras"
    model.save(path)
    with pytest.raises(UnsupportedLayerError, match=message):
        rnnstream.load(path)
    with pytest.raises(UnsupportedLayerError, match=message):
        rnnstream.from_keras(model)


def test_lambda_code_is_never_run(tmp_path: Path) -> None:
    """A Lambda whose code would write a file: loading refuses it and the file never appears."""
    marker = tmp_path / "ran.txt"

    def side_effect(x: Any) -> Any:
        marker.write_text("executed")
        return x

    model = seq_model(L.Lambda(side_effect, name="evil"))
    marker.unlink()
    model.save(tmp_path / "evil.keras")
    with pytest.raises(UnsupportedLayerError, match="never runs code"):
        rnnstream.load(tmp_path / "evil.keras")
    assert not marker.exists()


def test_subclassed_model_is_refused() -> None:
    class Subclassed(keras.Model):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = L.LSTM(3)

        def call(self, x: Any) -> Any:
            return self.rnn(x)

    model = Subclassed()
    model(np.zeros((1, 2, 3), np.float32))
    with pytest.raises(UnsupportedLayerError, match="subclassed model"):
        rnnstream.from_keras(model)


def test_every_error_is_an_rnnstream_error() -> None:
    for error in (ModelFileError, UnsupportedLayerError, rnnstream.InputError, rnnstream.StateError):
        assert issubclass(error, RnnstreamError)


# -- bad files ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    keras.utils.set_random_seed(2)
    model = seq_model(L.LSTM(4, name="rnn"), L.Dense(2, name="head"))
    folder = tmp_path_factory.mktemp("good")
    model.save(folder / "m.keras")
    model.save(folder / "m.h5")
    model.save_weights(folder / "only.weights.h5")
    return {"keras": folder / "m.keras", "h5": folder / "m.h5", "weights": folder / "only.weights.h5"}


def rewrite_keras(source: Path, target: Path, edit: Callable[[h5py.File], None]) -> Path:
    """Copy a .keras archive, editing its model.weights.h5 with ``edit``."""
    archive = zipfile.ZipFile(source)
    buffer = io.BytesIO(archive.read("model.weights.h5"))
    with h5py.File(buffer, "r+") as weights:
        edit(weights)
    with zipfile.ZipFile(target, "w") as out:
        for name in archive.namelist():
            out.writestr(name, buffer.getvalue() if name == "model.weights.h5" else archive.read(name))
    return target


def test_not_a_model(tmp_path: Path) -> None:
    path = tmp_path / "notes.keras"
    path.write_text("just some text")
    with pytest.raises(ModelFileError, match="not a Keras model file"):
        rnnstream.load(path)


@pytest.mark.parametrize("kind", ["keras", "h5"])
def test_truncated_file(good: dict[str, Path], tmp_path: Path, kind: str) -> None:
    data = good[kind].read_bytes()
    path = tmp_path / f"cut.{kind}"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="truncated"):
        rnnstream.load(path)


def test_zip_without_config(tmp_path: Path) -> None:
    path = tmp_path / "other.keras"
    with zipfile.ZipFile(path, "w") as out:
        out.writestr("readme.txt", "hello")
    with pytest.raises(ModelFileError, match=r"no config\.json"):
        rnnstream.load(path)


def test_weights_only_file(good: dict[str, Path]) -> None:
    with pytest.raises(ModelFileError, match="no architecture"):
        rnnstream.load(good["weights"])


def test_missing_weight_in_keras_file(good: dict[str, Path], tmp_path: Path) -> None:
    path = rewrite_keras(good["keras"], tmp_path / "missing.keras", lambda f: f.__delitem__("layers/lstm/cell/vars/1"))
    with pytest.raises(ModelFileError, match=r"'rnn' \(LSTM\) should have 3 weights.*the file has 2"):
        rnnstream.load(path)


def test_misshaped_weight_in_keras_file(good: dict[str, Path], tmp_path: Path) -> None:
    def shrink(f: h5py.File) -> None:
        del f["layers/lstm/cell/vars/1"]
        f["layers/lstm/cell/vars/1"] = np.zeros((4, 12), np.float32)

    path = rewrite_keras(good["keras"], tmp_path / "shape.keras", shrink)
    with pytest.raises(ModelFileError, match=r"'recurrent_kernel' has shape \(4, 12\), expected \(4, 16\)"):
        rnnstream.load(path)


def test_misshaped_weight_in_h5_file(good: dict[str, Path], tmp_path: Path) -> None:
    path = tmp_path / "shape.h5"
    path.write_bytes(good["h5"].read_bytes())
    with h5py.File(path, "r+") as f:
        group = f["model_weights/head"]
        name = next(n.decode() if isinstance(n, bytes) else n for n in group.attrs["weight_names"])
        del group[name]
        group[name] = np.zeros((5, 2), np.float32)
    with pytest.raises(UnsupportedLayerError, match=r"'head'.*kernel expects 5 input features, input has 4"):
        rnnstream.load(path)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="cannot read"):
        rnnstream.load(tmp_path / "nope.keras")
    with pytest.raises(ModelFileError, match="is a directory"):
        rnnstream.load(tmp_path)
