"""Issue #20, Keras 3 ``keras.ops`` nodes in .keras files: functional models that call ``keras.ops`` on
symbolic tensors, compared with Keras step by step for T = 1, 7, 50, and the refusals of operations
outside the table, each naming the operation and the reason."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import rnnstream
from tests.importers.test_keras_conformance import TOLERANCE
from tests.importers.test_keras_coverage import BATCH, LENGTHS, Case, assert_matches, assert_refused, build_saved

keras = pytest.importorskip("keras")
L = keras.layers
ops = keras.ops


def activations_and_arithmetic(k: Any) -> Any:
    inp = L.Input((None, 5))
    h = L.LSTM(8, return_sequences=True)(inp)
    y = ops.tanh(h * 2.0 + 1.0) - ops.relu(h) / 3.0
    return k.Model(inp, L.Dense(3)(1.0 - ops.sigmoid(-y)))


def tensor_products_and_concat(k: Any) -> Any:
    inp = L.Input((None, 4))
    h = L.GRU(6, return_sequences=True)(inp)
    g = L.Dense(6, activation="sigmoid")(inp)
    joined = ops.concatenate([ops.multiply(h, g), ops.maximum(h, g), ops.leaky_relu(h, 0.1)], axis=-1)
    return k.Model(inp, L.SimpleRNN(5, return_sequences=True)(joined))


def last_step_head(k: Any) -> Any:
    inp = L.Input((None, 3))
    h = L.LSTM(8, return_sequences=True)(inp)
    last = h[:, -1, :]
    return k.Model(inp, ops.softmax(L.Dense(4)(ops.reshape(last, (-1, 2, 4))), axis=-1))


def feature_slices_and_reductions(k: Any) -> Any:
    inp = L.Input((None, 6))
    h = L.GRU(8, return_sequences=True)(inp)
    mean = ops.mean(h, axis=-1, keepdims=True)
    top = ops.expand_dims(ops.max(h, axis=2), -1)
    head = L.Dense(3)(ops.concatenate([h[..., :3] * 0.5 - 0.1, mean, top], axis=-1))
    return k.Model(inp, [head, h[:, :, 1:7:2], h[:, -1, 4], ops.sum(ops.silu(h), axis=-1)])


def every_activation(k: Any) -> Any:
    """Each one-argument activation of ``keras.ops``, with its options (gelu both ways), on values of both signs
    and past every kink (×3: beyond the shrinks' ±0.5, hard_tanh's ±1, sparse_plus' ±1)."""
    inp = L.Input((None, 4))
    z = L.LSTM(6, return_sequences=True)(inp) * 3.0
    acts = [ops.elu(z), ops.elu(z, alpha=0.5), ops.gelu(z), ops.gelu(z, approximate=False), ops.abs(z),
            ops.absolute(z), ops.selu(z), ops.softplus(z), ops.softsign(z), ops.hard_sigmoid(z), ops.silu(z),
            ops.swish(z), ops.log_sigmoid(z), ops.relu6(z * 3.0), ops.leaky_relu(z, negative_slope=0.3),
            ops.celu(z), ops.hard_silu(z), ops.hard_swish(z), ops.hard_tanh(z), ops.tanh_shrink(z),
            ops.sparse_plus(z), ops.sparse_sigmoid(z), ops.squareplus(z), ops.soft_shrink(z), ops.hard_shrink(z),
            ops.log_softmax(z), ops.sparsemax(z), ops.glu(z), ops.exp(z)]
    return k.Model(inp, [ops.concatenate(acts, axis=-1), L.Dense(3)(ops.gelu(z))])


def masked_then_ops(k: Any) -> Any:
    """Masking before the LSTM; keras.ops nodes drop the mask, so the recurrent layers after them are unmasked
    (what Keras computes, and writes down as ``mask=None``)."""
    inp = L.Input((None, 3))
    h = L.LSTM(6, return_sequences=True)(L.Masking()(inp))
    y = ops.tanh(h * 2.0 + 1.0)
    return k.Model(inp, [L.GRU(4, return_sequences=True)(y), L.SimpleRNN(3, return_sequences=True)(y[..., :4]),
                         L.LSTM(2)(ops.concatenate([h, ops.abs(h)], axis=-1)), L.GRU(3)(h + h), h])


CASES = [
    Case("activations_and_arithmetic", activations_and_arithmetic, (5,)),
    Case("every_activation", every_activation, (4,)),
    Case("masked_then_ops", masked_then_ops, (3,), masked=True),
    Case("tensor_products_and_concat", tensor_products_and_concat, (4,)),
    Case("last_step_head", last_step_head, (3,)),
    Case("feature_slices_and_reductions", feature_slices_and_reductions, (6,)),
]


@pytest.fixture(scope="module", params=CASES, ids=lambda c: c.name)
def built(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Case, Any, Path]:
    case: Case = request.param
    folder = tmp_path_factory.mktemp(case.name)
    return case, build_saved(keras, case, 7, folder, "model.keras", "model.h5"), folder


def test_keras_ops_are_operation_nodes(built: tuple[Case, Any, Path]) -> None:
    _, model, _ = built
    assert any(type(op).__module__.startswith("keras.src.ops") for op in model.operations)


@pytest.mark.parametrize("T", LENGTHS)
@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_keras3_file_with_keras_ops_steps_equal_keras(built: tuple[Case, Any, Path], suffix: str, T: int) -> None:
    case, model, folder = built
    assert_matches(rnnstream.load(folder / f"model{suffix}"), model, case, T)
    if T == 7 and suffix == ".keras":
        assert_matches(rnnstream.from_keras(model), model, case, T)


def embedded_then_ops(k: Any) -> Any:
    inp = L.Input((None,), dtype="int32")
    h = L.GRU(6, return_sequences=True)(L.Embedding(10, 5, mask_zero=True)(inp))
    y = ops.gelu(h) - 0.5
    return k.Model(inp, [L.LSTM(3, return_sequences=True)(y), L.LSTM(3)(ops.mean(h, axis=-1, keepdims=True)), h])


def without_mask_arguments(source: Path, target: Path) -> None:
    """``source`` (.keras) as Keras < 3.10 wrote it: no ``mask`` arguments in the calls, masks implicit."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for item in old.infolist():
            data = old.read(item)
            if item.filename == "config.json":
                config = json.loads(data)
                for layer in config["config"]["layers"]:
                    for call in layer["inbound_nodes"]:
                        call.get("kwargs", {}).pop("mask", None)
                data = json.dumps(config).encode()
            new.writestr(item, data)


@pytest.mark.parametrize("T", LENGTHS)
def test_embedding_mask_then_keras_ops(T: int, tmp_path: Path) -> None:
    """Token 0 masks the GRU; the keras.ops nodes after it drop the mask, with masks written down (Keras >= 3.10)
    or implicit (older files)."""
    case = Case("embedded_then_ops", embedded_then_ops, ())
    model = build_saved(keras, case, 3, tmp_path, "model.keras", "model.h5")
    without_mask_arguments(tmp_path / "model.keras", tmp_path / "implicit.keras")
    rng = np.random.default_rng(T)
    ids = rng.integers(1, 10, (BATCH, T))
    ids[rng.random((BATCH, T)) < 0.3] = 0
    expected = [np.asarray(y) for y in model(ids, training=False)]
    for name in ("model.keras", "model.h5", "implicit.keras"):
        stream_model = rnnstream.load(tmp_path / name)
        ys, _ = stream_model.run(ids, stream_model.initial_state(BATCH))
        for ours, theirs in zip(ys, expected, strict=True):
            np.testing.assert_allclose(ours if theirs.ndim == ours.ndim else ours[:, -1], theirs, **TOLERANCE)


@pytest.mark.parametrize("T", LENGTHS)
def test_masking_then_keras_ops_in_implicit_mask_files(T: int, tmp_path: Path) -> None:
    case = next(c for c in CASES if c.name == "masked_then_ops")
    model = build_saved(keras, case, 7, tmp_path, "model.keras")
    without_mask_arguments(tmp_path / "model.keras", tmp_path / "implicit.keras")
    assert_matches(rnnstream.load(tmp_path / "implicit.keras"), model, case, T)


# -- refusals ---------------------------------------------------------------------------------------


def _one_op(op: Callable[[Any], Any]) -> Callable[[], Any]:
    def build() -> Any:
        inp = L.Input((None, 4))
        return keras.Model(inp, op(L.GRU(6, return_sequences=True)(inp)))

    return build


REFUSALS: list[tuple[str, Callable[[], Any], str]] = [
    ("op_not_in_table", _one_op(lambda h: ops.cumsum(h, axis=-1)),
     r"\(Cumsum\): Cumsum is a keras\.ops operation rnnstream does not convert .*never runs code"),
    ("first_step", _one_op(lambda h: h[:, 0, :]),
     r"\(GetItem\): selects 0 of the time axis: at step t a stream knows steps up to t only"),
    ("mean_over_time", _one_op(lambda h: ops.mean(h, axis=1)),
     r"\(Mean\) works along axis 1 of \(B, T, 6\), the batch or time axis"),
    ("tensor_division", _one_op(lambda h: h / ops.relu(h)),
     r"\(TrueDivide\): divides a tensor by a tensor"),
    ("celu_alpha", _one_op(lambda h: ops.celu(h, alpha=0.5)),
     r"\(Celu\): option alpha=0\.5 is not supported: rnnstream computes alpha=1\.0 only"),
    ("squareplus_b", _one_op(lambda h: ops.squareplus(h, b=2)),
     r"\(Squareplus\): option b=2 is not supported: rnnstream computes b=4 only"),
    ("softmax_over_time", _one_op(lambda h: ops.softmax(h, axis=1)),
     r"\(Softmax\) works along axis 1 of \(B, T, 6\), the batch or time axis"),
    ("softmax_over_a_middle_axis", _one_op(lambda h: ops.softmax(L.Reshape((-1, 2, 3))(h), axis=2)),
     r"\(Softmax\): softmax over axis 2: rnnstream computes it over the last axis only"),
    ("threshold", _one_op(lambda h: ops.threshold(h, 0.1, 0.0)),
     r"\(Threshold\): Threshold is a keras\.ops operation rnnstream does not convert"),
]


@pytest.mark.parametrize(("case", "build", "message"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_keras_op_refused_with_the_real_reason(case: str, build: Callable[[], Any], message: str,
                                               tmp_path: Path) -> None:
    assert_refused(build(), tmp_path / "model.keras", message)
