"""Issue #20, tf.keras 2 TF-op nodes (``TFOpLambda``, ``SlicingOpLambda``) in .h5 files: models that call
TensorFlow functions on Keras tensors, compared with tf.keras step by step for T = 1, 7, 50, and the
refusals of functions outside the table and of slices over time other than the last step."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import rnnstream
from tests.importers.test_keras_conformance import TOLERANCE
from tests.importers.test_keras_coverage import BATCH, LENGTHS, Case, assert_matches, assert_refused, build_saved
from tests.zoo import randomize

tf = pytest.importorskip("tensorflow")
tf_keras = pytest.importorskip("tf_keras")
L = tf_keras.layers


def activations_and_arithmetic(k: Any) -> Any:
    inp = L.Input((None, 5))
    h = L.LSTM(8, return_sequences=True)(inp)
    y = tf.math.tanh(h * 2.0 + 1.0) - tf.nn.relu(h) / 3.0
    return k.Model(inp, L.Dense(3)(1.0 - tf.math.sigmoid(-y)))


def tensor_products_and_concat(k: Any) -> Any:
    inp = L.Input((None, 4))
    h = L.GRU(6, return_sequences=True)(inp)
    g = L.Dense(6, activation="sigmoid")(inp)
    joined = tf.concat([tf.math.multiply(h, g), h + g, tf.nn.leaky_relu(h, alpha=0.1)], axis=-1)
    return k.Model(inp, L.SimpleRNN(5, return_sequences=True)(joined))


def last_step_head(k: Any) -> Any:
    inp = L.Input((None, 3))
    h = L.LSTM(8, return_sequences=True)(inp)
    last = h[:, -1, :]
    return k.Model(inp, tf.nn.softmax(L.Dense(4)(tf.reshape(last, [-1, 2, 4])), axis=-1))


def feature_slices(k: Any) -> Any:
    inp = L.Input((None, 6))
    h = L.GRU(8, return_sequences=True)(inp)
    return k.Model(inp, [L.Dense(2)(h[..., :3]), h[:, :, 1:7:2], h[:, -1, 4]])


def feature_reductions(k: Any) -> Any:
    inp = L.Input((None, 4))
    h = L.LSTM(6, return_sequences=True)(inp)
    mean = tf.reduce_mean(h, axis=-1, keepdims=True)
    top = tf.expand_dims(tf.reduce_max(h, axis=2), -1)
    return k.Model(inp, [L.Dense(3)(tf.concat([h * 0.5 - 0.1, mean, top], axis=-1)), tf.reduce_sum(h, axis=-1)])


def reshaped_features(k: Any) -> Any:
    inp = L.Input((None, 4))
    h = L.SimpleRNN(6, return_sequences=True)(inp)
    v = L.LSTM(6)(tf.nn.elu(h))
    grid = tf.reshape(v, [-1, 3, 2])
    return k.Model(inp, tf.reduce_min(L.Dense(5)(grid), axis=1))


def every_activation(k: Any) -> Any:
    """The TF activations with a table entry, options included (tf.nn.gelu is exact unless approximate=True)."""
    inp = L.Input((None, 4))
    z = L.LSTM(6, return_sequences=True)(inp) * 3.0
    acts = [tf.nn.elu(z), tf.nn.gelu(z), tf.nn.gelu(z, approximate=True), tf.abs(z), tf.math.abs(z), tf.nn.selu(z),
            tf.nn.softplus(z), tf.nn.softsign(z), tf.nn.silu(z), tf.nn.swish(z), tf.math.log_sigmoid(z),
            tf.nn.relu6(z * 3.0), tf.nn.leaky_relu(z), tf.nn.log_softmax(z), tf.nn.softmax(z), tf.exp(z)]
    return k.Model(inp, [tf.concat(acts, axis=-1), L.Dense(3)(tf.nn.gelu(z))])


def masked_then_ops(k: Any) -> Any:
    """Masking before the LSTM; TF-op layers do not support masking, so the recurrent layers after them are
    unmasked (a slice and a reduction drop the mask as well)."""
    inp = L.Input((None, 3))
    h = L.LSTM(6, return_sequences=True)(L.Masking()(inp))
    y = tf.math.tanh(h * 2.0 + 1.0)
    return k.Model(inp, [L.GRU(4, return_sequences=True)(y), L.SimpleRNN(3, return_sequences=True)(y[..., :4]),
                         L.LSTM(2)(tf.concat([h, tf.abs(h)], axis=-1)), L.GRU(3)(h + h),
                         L.LSTM(2)(tf.reduce_mean(h, axis=-1, keepdims=True)), L.GRU(3)(tf.nn.gelu(h)), h])


CASES = [
    Case("every_activation", every_activation, (4,)),
    Case("masked_then_ops", masked_then_ops, (3,), masked=True),
    Case("activations_and_arithmetic", activations_and_arithmetic, (5,)),
    Case("tensor_products_and_concat", tensor_products_and_concat, (4,)),
    Case("last_step_head", last_step_head, (3,)),
    Case("feature_slices", feature_slices, (6,)),
    Case("feature_reductions", feature_reductions, (4,)),
    Case("reshaped_features", reshaped_features, (4,)),
]


@pytest.fixture(scope="module", params=CASES, ids=lambda c: c.name)
def built(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Case, Any, Path]:
    case: Case = request.param
    folder = tmp_path_factory.mktemp(case.name)
    return case, build_saved(tf_keras, case, 5, folder, "model.h5"), folder / "model.h5"


def test_tf_ops_are_tf_op_layers(built: tuple[Case, Any, Path]) -> None:
    _, model, _ = built
    assert any(type(layer).__name__ in ("TFOpLambda", "SlicingOpLambda") for layer in model.layers)


@pytest.mark.parametrize("T", LENGTHS)
def test_tf_keras2_h5_with_tf_ops_steps_equal_keras(built: tuple[Case, Any, Path], T: int) -> None:
    case, model, path = built
    stream_model = rnnstream.load(path)
    assert "Keras 2" in stream_model.source
    assert_matches(stream_model, model, case, T)
    if T == 7:
        assert_matches(rnnstream.from_keras(model), model, case, T)


@pytest.mark.parametrize("T", LENGTHS)
def test_embedding_mask_then_tf_ops(T: int, tmp_path: Path) -> None:
    """Token 0 masks the GRU; the TF-op layers after it drop the mask (they do not support masking)."""
    tf_keras.utils.set_random_seed(3)
    inp = L.Input((None,), dtype="int32")
    h = L.GRU(6, return_sequences=True)(L.Embedding(10, 5, mask_zero=True)(inp))
    model = tf_keras.Model(inp, [L.LSTM(3, return_sequences=True)(tf.nn.gelu(h) - 0.5),
                                 L.LSTM(3)(tf.reduce_mean(h, axis=-1, keepdims=True)), h])
    randomize(model, seed=4)
    model.save(tmp_path / "model.h5")
    rng = np.random.default_rng(T)
    ids = rng.integers(1, 10, (BATCH, T))
    ids[rng.random((BATCH, T)) < 0.3] = 0
    expected = [np.asarray(y) for y in model(ids, training=False)]
    for stream_model in (rnnstream.load(tmp_path / "model.h5"), rnnstream.from_keras(model)):
        ys, _ = stream_model.run(ids, stream_model.initial_state(BATCH))
        for ours, theirs in zip(ys, expected, strict=True):
            np.testing.assert_allclose(ours if theirs.ndim == ours.ndim else ours[:, -1], theirs, **TOLERANCE)


# -- refusals ---------------------------------------------------------------------------------------


def _one_op(op: Callable[[Any], Any], features: int = 4) -> Callable[[], Any]:
    def build() -> Any:
        inp = L.Input((None, features))
        return tf_keras.Model(inp, op(L.GRU(6, return_sequences=True)(inp)))

    return build


REFUSALS: list[tuple[str, Callable[[], Any], str]] = [
    ("op_not_in_table", _one_op(tf.math.cumsum),
     r"\(math\.cumsum\): tf\.math\.cumsum is a TensorFlow function rnnstream does not convert .*never runs code"),
    ("first_step", _one_op(lambda h: h[:, 0, :]),
     r"\(__operators__\.getitem\): selects 0 of the time axis: at step t a stream knows steps up to t only"),
    ("window_of_steps", _one_op(lambda h: h[:, -3:]),
     r"selects -3: of the time axis.*the last step \(-1, the current one\)"),
    ("reduce_over_time", _one_op(lambda h: tf.reduce_mean(h, axis=1)),
     r"\(math\.reduce_mean\) works along axis 1 of \(B, T, 6\), the batch or time axis"),
    ("dynamic_shape", _one_op(lambda h: tf.reshape(h, [-1, tf.shape(h)[1], 3, 2])),
     r"\(compat\.v1\.shape\): tf\.compat\.v1\.shape cannot stream: it reads the tensor's dynamic shape"),
    ("reshape_sequence", _one_op(lambda h: tf.reshape(h, [-1, 3, 2])),
     r"tf\.reshape of the sequence \(B, T, 6\) .* fixes the time length or folds time into the batch"),
    ("tensor_division", _one_op(lambda h: h / tf.nn.relu(h)),
     r"\(math\.truediv\): divides a tensor by a tensor"),
    ("silu_beta", _one_op(lambda h: tf.nn.silu(h, beta=2.0)),
     r"\(nn\.silu\): option beta=2\.0 is not supported: rnnstream computes beta=1\.0 only"),
    ("log_softmax_over_time", _one_op(lambda h: tf.nn.log_softmax(h, axis=1)),
     r"\(nn\.log_softmax\) works along axis 1 of \(B, T, 6\), the batch or time axis"),
]


@pytest.mark.parametrize(("case", "build", "message"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_tf_op_refused_with_the_real_reason(case: str, build: Callable[[], Any], message: str,
                                            tmp_path: Path) -> None:
    assert_refused(build(), tmp_path / "model.h5", message)
