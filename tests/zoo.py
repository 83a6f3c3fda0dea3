"""A zoo of Keras models covering every layer rnnstream supports, alone and in combinations.

Each builder takes the Keras module (``keras`` for Keras 3, ``tf_keras`` for tf.keras 2) so one
definition serves both writers. ``randomize`` gives every weight (biases too) non-trivial values.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

Build = Callable[[Any], Any]


@dataclass(frozen=True)
class InputKind:
    """``features`` floats per step, or token ids below ``vocab`` when ``vocab`` is set."""

    features: int = 0
    vocab: int = 0


@dataclass(frozen=True)
class ZooModel:
    name: str
    build: Build
    inputs: list[InputKind]
    masked_steps: bool = False  # feed all-zero steps / token 0 so masks are exercised
    keras3_only: bool = False
    batch: int = 3
    input_names: tuple[str, ...] = ()  # set when the model takes a dict of inputs


def _seq(k: Any, features: int, *layers: Any, batch_size: int | None = None) -> Any:
    inp = k.layers.Input((None, features), batch_size=batch_size)
    x = inp
    for layer in layers:
        x = layer(x)
    return k.Model(inp, x)


def lstm_per_step(k: Any) -> Any:
    L = k.layers
    return _seq(k, 4, L.LSTM(16, return_sequences=True), L.Dense(3))


def lstm_last(k: Any) -> Any:
    L = k.layers
    return _seq(k, 4, L.LSTM(16), L.Dense(2, activation="tanh"))


def stacked_lstm(k: Any) -> Any:
    L = k.layers
    return k.Sequential([
        L.Input((None, 5)),
        L.LSTM(12, return_sequences=True),
        L.LSTM(10, return_sequences=True, recurrent_activation="hard_sigmoid"),
        L.LSTM(8, use_bias=False),
    ])


def stacked_gru_reset_after(k: Any) -> Any:
    L = k.layers
    return k.Sequential([L.Input((None, 4)), L.GRU(12, return_sequences=True), L.GRU(8, reset_after=True)])


def stacked_gru_reset_before(k: Any) -> Any:
    L = k.layers
    return k.Sequential([
        L.Input((None, 4)),
        L.GRU(12, return_sequences=True, reset_after=False),
        L.GRU(8, reset_after=False, recurrent_activation="hard_sigmoid", activation="softsign"),
    ])


def stacked_simple_rnn(k: Any) -> Any:
    L = k.layers
    return k.Sequential([
        L.Input((None, 4)),
        L.SimpleRNN(12, return_sequences=True),
        L.SimpleRNN(8, activation="relu", return_sequences=True),
        L.SimpleRNN(6, activation="sigmoid"),
    ])


def residual_functional(k: Any) -> Any:
    L = k.layers
    inp = L.Input((None, 4))
    d = L.Dense(8, activation="relu")(inp)
    h = L.LSTM(8, return_sequences=True)(d)
    x = L.Add()([d, h])
    x = L.LayerNormalization()(x)
    return k.Model(inp, L.Dense(2)(x))


def embedding_lstm_softmax(k: Any) -> Any:
    L = k.layers
    inp = L.Input((None,), dtype="int32")
    x = L.Embedding(20, 8)(inp)
    x = L.LSTM(16, return_sequences=True)(x)
    return k.Model(inp, L.Dense(20, activation="softmax")(x))


def causal_conv_gru(k: Any) -> Any:
    L = k.layers
    return _seq(
        k,
        3,
        L.Conv1D(6, 3, padding="causal", dilation_rate=2, activation="relu"),
        L.Conv1D(5, 2, padding="causal"),
        L.Conv1D(5, 1, use_bias=False),
        L.GRU(8, return_sequences=True),
        L.TimeDistributed(L.Dense(2)),
    )


def masking_lstm(k: Any) -> Any:
    L = k.layers
    inp = L.Input((None, 3))
    m = L.Masking(mask_value=0.0)(inp)
    d = L.Dense(6)(m)
    h = L.LSTM(8, return_sequences=True)(d)
    g = L.GRU(5, return_sequences=True, zero_output_for_mask=True)(h)
    last = L.SimpleRNN(4)(g)
    return k.Model(inp, [L.Dense(2)(g), last])


def embedding_mask_zero(k: Any) -> Any:
    L = k.layers
    inp = L.Input((None,), dtype="int32")
    x = L.Embedding(15, 6, mask_zero=True)(inp)
    x = L.GRU(8, return_sequences=True)(x)
    x = L.SimpleRNN(6)(x)
    return k.Model(inp, L.Dense(15, activation="softmax")(x))


def branches_and_states(k: Any) -> Any:
    L = k.layers
    inp = L.Input((None, 4))
    seq, h, c = L.LSTM(8, return_sequences=True, return_state=True)(inp)
    a = L.GRU(6)(seq)
    b = L.SimpleRNN(5)(seq)
    joined = L.Concatenate()([a, b])
    return k.Model(inp, [L.Dense(3)(joined), h, c])


def every_merge(k: Any) -> Any:
    L = k.layers
    inp = L.Input((None, 4))
    a = L.Dense(6)(inp)
    b = L.Dense(6, activation="tanh")(inp)
    c = L.Dense(6, activation="sigmoid")(inp)
    merged = [
        L.Add()([a, b, c]),
        L.Subtract()([a, b]),
        L.Multiply()([a, b, c]),
        L.Average()([a, c]),
        L.Maximum()([a, b]),
        L.Minimum()([b, c]),
    ]
    x = L.Concatenate(axis=2)(merged)
    return k.Model(inp, L.LSTM(7, return_sequences=True)(x))


def normalizations(k: Any) -> Any:
    L = k.layers
    inp = L.Input((None, 3))
    x = L.Normalization(mean=[0.5, -1.0, 2.0], variance=[4.0, 0.25, 1.0])(inp)
    x = L.BatchNormalization()(x)
    x = L.LSTM(8, return_sequences=True)(x)
    x = L.LayerNormalization(epsilon=1e-2)(x)
    x = L.Dense(3)(x)
    x = L.BatchNormalization(center=False)(x)
    x = L.LayerNormalization(scale=False)(x)
    return k.Model(inp, L.Normalization(mean=1.0, variance=9.0, invert=True)(x))


def adapted_normalization(k: Any) -> Any:
    L = k.layers
    norm = L.Normalization()
    norm.adapt(np.random.default_rng(1).normal(3.0, 2.0, (50, 3)).astype(np.float32))
    return _seq(k, 3, norm, L.GRU(6, return_sequences=True))


def dropouts_are_identity(k: Any) -> Any:
    L = k.layers
    return _seq(
        k,
        4,
        L.GaussianNoise(0.5),
        L.Dropout(0.5),
        L.SimpleRNN(8, return_sequences=True, dropout=0.3, recurrent_dropout=0.3),
        L.SpatialDropout1D(0.5),
        L.GaussianDropout(0.5),
        L.LSTM(6, return_sequences=True, dropout=0.2),
        L.Dense(2),
    )


def rnn_flags(k: Any) -> Any:
    L = k.layers
    unroll = k.__name__ == "keras"  # tf.keras 2 can only unroll a fixed number of time steps
    return _seq(
        k,
        4,
        L.LSTM(8, return_sequences=True, stateful=True),
        L.GRU(6, return_sequences=True, unroll=unroll),
        L.SimpleRNN(5, return_sequences=True, stateful=True, unroll=unroll),
        batch_size=3,
    )


def activation_layers(k: Any) -> Any:
    L = k.layers
    return _seq(
        k,
        4,
        L.Dense(8),
        L.Activation("selu"),
        L.Dense(8, activation="elu"),
        L.LeakyReLU(),
        L.Dense(8, activation="softplus"),
        L.ReLU(max_value=1.5, negative_slope=0.1, threshold=0.2),
        L.GRU(6, return_sequences=True, activation="swish"),
        L.Dense(5, activation="gelu"),
        L.Softmax(),
    )


def keras3_extras(k: Any) -> Any:
    L = k.layers
    return _seq(
        k,
        4,
        L.RNN(L.LSTMCell(6), return_sequences=True),
        L.LayerNormalization(rms_scaling=True),
        L.Dense(8, activation="hard_silu"),
        L.Activation("log_softmax"),
        L.LSTM(5, return_sequences=True, use_cudnn=False, recurrent_activation="hard_sigmoid"),
        L.Dense(6, activation="mish"),
        L.Activation("glu"),
    )


def two_inputs(k: Any) -> Any:
    L = k.layers
    values = L.Input((None, 3), name="values")
    tokens = L.Input((None,), dtype="int32", name="tokens")
    e = L.Embedding(9, 4, name="embed")(tokens)
    x = L.Concatenate()([values, e])
    x = L.LSTM(8, return_sequences=True)(x)
    return k.Model({"values": values, "tokens": tokens}, {"out": L.Dense(2)(x), "last": L.GRU(3)(x)})


ZOO: list[ZooModel] = [
    ZooModel("lstm_per_step", lstm_per_step, [InputKind(4)]),
    ZooModel("lstm_last", lstm_last, [InputKind(4)]),
    ZooModel("stacked_lstm", stacked_lstm, [InputKind(5)]),
    ZooModel("stacked_gru_reset_after", stacked_gru_reset_after, [InputKind(4)]),
    ZooModel("stacked_gru_reset_before", stacked_gru_reset_before, [InputKind(4)]),
    ZooModel("stacked_simple_rnn", stacked_simple_rnn, [InputKind(4)]),
    ZooModel("residual_functional", residual_functional, [InputKind(4)]),
    ZooModel("embedding_lstm_softmax", embedding_lstm_softmax, [InputKind(vocab=20)]),
    ZooModel("causal_conv_gru", causal_conv_gru, [InputKind(3)]),
    ZooModel("masking_lstm", masking_lstm, [InputKind(3)], masked_steps=True),
    ZooModel("embedding_mask_zero", embedding_mask_zero, [InputKind(vocab=15)], masked_steps=True),
    ZooModel("branches_and_states", branches_and_states, [InputKind(4)]),
    ZooModel("every_merge", every_merge, [InputKind(4)]),
    ZooModel("normalizations", normalizations, [InputKind(3)]),
    ZooModel("adapted_normalization", adapted_normalization, [InputKind(3)]),
    ZooModel("dropouts_are_identity", dropouts_are_identity, [InputKind(4)]),
    ZooModel("rnn_flags", rnn_flags, [InputKind(4)]),
    ZooModel("activation_layers", activation_layers, [InputKind(4)]),
    ZooModel("keras3_extras", keras3_extras, [InputKind(4)], keras3_only=True),
    ZooModel("two_inputs", two_inputs, [InputKind(3), InputKind(vocab=9)], keras3_only=True,
             input_names=("values", "tokens")),
]


def randomize(model: Any, seed: int, scale: float = 0.4) -> None:
    """Give every weight of ``model`` a random, non-trivial value (variances stay positive)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        values = []
        for weight in layer.weights:
            name = weight.name.split("/")[-1]
            shape = tuple(int(d) for d in weight.shape)
            if "variance" in name:
                values.append(rng.uniform(0.5, 2.0, shape).astype(np.float32))
            elif "count" in name:
                values.append(np.full(shape, 50, dtype=np.int64))
            else:
                values.append(rng.normal(0.0, scale, shape).astype(np.float32))
        if values:
            layer.set_weights(values)
            if type(layer).__name__ == "Normalization":
                layer.finalize_state()  # Keras caches adapted statistics; refresh them from the variables


def make_inputs(zoo: ZooModel, T: int, seed: int) -> list[np.ndarray]:
    """Random inputs ``[B, T, F]`` (or ``[B, T]`` token ids); some steps masked if the model masks."""
    rng = np.random.default_rng(seed)
    arrays = []
    for kind in zoo.inputs:
        if kind.vocab:
            x = rng.integers(1, kind.vocab, (zoo.batch, T)).astype(np.int32)
            if zoo.masked_steps:
                x[rng.random((zoo.batch, T)) < 0.3] = 0
        else:
            x = rng.normal(0.0, 1.0, (zoo.batch, T, kind.features)).astype(np.float32)
            if zoo.masked_steps:
                x[rng.random((zoo.batch, T)) < 0.3] = 0.0
        arrays.append(x)
    return arrays


def feed(zoo: ZooModel, xs: list[np.ndarray]) -> Any:
    """The inputs as both Keras and rnnstream take them: a dict by name, a list, or one array."""
    if zoo.input_names:
        return dict(zip(zoo.input_names, xs, strict=True))
    return xs[0] if len(xs) == 1 else xs


def keras_outputs(model: Any, zoo: ZooModel, xs: list[np.ndarray]) -> list[np.ndarray]:
    """The Keras model's full-sequence outputs, flattened in Keras order (dicts by sorted key)."""
    for layer in model.layers:
        if getattr(layer, "stateful", False):
            layer.reset_states()
    out = model(feed(zoo, xs), training=False)
    if isinstance(out, dict):
        out = [out[key] for key in sorted(out)]
    elif not isinstance(out, list | tuple):
        out = [out]
    return [np.asarray(o) for o in out]
