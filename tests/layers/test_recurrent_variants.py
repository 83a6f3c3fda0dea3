"""The recurrent variants of PyTorch and ONNX models (clip, peepholes, input_forget, cell activation, projection):
flags in the config only when used, plain layers unchanged, bad weights refused, and the fused backend runs
the NumPy step for every variant while agreeing with the oracle. (Their numbers are checked against
PyTorch and ONNX Runtime in tests/importers.)"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import rnnstream
from rnnstream.backends import fused
from rnnstream.graph import GraphBuilder
from rnnstream.layers.layer import Layer, TensorSpec
from rnnstream.layers.recurrent import GRU, LSTM, SimpleRNN

H, F, P = 6, 4, 3


def _w(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.normal(0.0, 0.5, shape).astype(np.float32)


def _lstm(rng: np.random.Generator, **variant: Any) -> LSTM:
    h_size = P if variant.get("projection") is not None else H
    return LSTM("lstm", Wx=_w(rng, F, 4 * H), Wh=_w(rng, h_size, 4 * H), b=_w(rng, 4 * H), **variant)


PLAIN_KEYS = {"units", "activation", "recurrent_activation", "keras_major", "return_sequences", "return_state",
              "zero_output_for_mask"}  # fmt: skip


def test_plain_layers_keep_their_config(rng: np.random.Generator) -> None:
    layer = _lstm(rng)
    assert layer.plain and layer.extras == []
    assert set(layer.config()) == PLAIN_KEYS  # so the fingerprints of Keras models do not change
    assert set(GRU("g", Wx=_w(rng, F, 3 * H), Wh=_w(rng, H, 3 * H), bx=_w(rng, 3 * H), bh=None,
                   reset_after=False).config()) == PLAIN_KEYS | {"reset_after"}  # fmt: skip


@pytest.mark.parametrize(
    ("variant", "extras", "config"),
    [
        ({"clip": 2.0}, ["clip"], {"clip": 2.0}),
        ({"peepholes": "p"}, ["peepholes"], {}),
        ({"input_forget": True}, ["input_forget"], {"input_forget": True}),
        ({"cell_activation": "softsign"}, ["cell_activation"], {"cell_activation": "softsign"}),
        ({"projection": "w"}, ["projection"], {}),
    ],
)
def test_each_variant_is_named_and_configured(
    rng: np.random.Generator, variant: dict[str, Any], extras: list[str], config: dict[str, Any]
) -> None:
    arrays = {"p": _w(rng, 3, H), "w": _w(rng, H, P)}
    layer = _lstm(rng, **{k: arrays.get(v, v) if isinstance(v, str) else v for k, v in variant.items()})
    assert layer.extras == extras and not layer.plain
    assert {k: v for k, v in layer.config().items() if k not in PLAIN_KEYS} == config
    if "projection" in variant:
        assert layer.state_parts == [("h", P), ("c", H)] and "projection" in layer.params()
    if "peepholes" in variant:
        assert "peepholes" in layer.params()


def test_variants_change_the_fingerprint(rng: np.random.Generator) -> None:
    def model(layer: Layer) -> rnnstream.StreamModel:
        g = GraphBuilder()
        x = g.add_input("x", TensorSpec((F,)))
        return rnnstream.StreamModel(g.build(g.add_node(layer.name, layer, [x])[:1], ["y"]), backend="numpy")

    weights = {"Wx": _w(rng, F, 4 * H), "Wh": _w(rng, H, 4 * H), "b": _w(rng, 4 * H)}
    prints = {model(LSTM("l", **weights, **variant)).fingerprint  # type: ignore[arg-type]
              for variant in ({}, {"clip": 3.0}, {"clip": 4.0}, {"input_forget": True})}  # fmt: skip
    assert len(prints) == 4


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda r: _lstm(r, peepholes=_w(r, 3, H + 1)), r"peepholes have shape \(3, 7\), expected \(3, 6\)"),
        (lambda r: LSTM("l", Wx=_w(r, F, 4 * H), Wh=_w(r, H, 4 * H), b=_w(r, 4 * H), projection=_w(r, H, P)),
         r"Wh has 6 rows, but h has 3 columns"),
        (lambda r: _lstm(r, clip=0.0), "clip must be a positive number, got 0.0"),
        (lambda r: LSTM("l", Wx=_w(r, F, 4 * H), Wh=_w(r, H, 4 * H), b=_w(r, 3 * H)), r"bias has shape \(18,\)"),
        (lambda r: SimpleRNN("s", Wx=_w(r, F, H), Wh=_w(r, H + 1, H), b=_w(r, H)), "Wh has 7 rows, expected 6"),
        (lambda r: GRU("g", Wx=_w(r, F, 3 * H + 1), Wh=_w(r, H, 3 * H), bx=_w(r, 3 * H), bh=None, reset_after=False),
         r"weights Wx \(4, 19\) and Wh \(6, 18\) do not fit 3 gates"),
    ],
    ids=["peepholes", "projection", "clip", "bias", "simple_rnn", "gru"],
)
def test_bad_weights_are_refused(rng: np.random.Generator, make: Any, message: str) -> None:
    with pytest.raises(rnnstream.UnsupportedLayerError, match=message):
        make(rng)


@pytest.mark.skipif(not fused.available(), reason="the fused kernel is not built")
def test_fused_backend_runs_variants_in_numpy_and_agrees(rng: np.random.Generator) -> None:
    g = GraphBuilder()
    x = g.add_input("x", TensorSpec((F,)))
    plain = LSTM("plain", Wx=_w(rng, F, 4 * H), Wh=_w(rng, H, 4 * H), b=_w(rng, 4 * H), return_sequences=True)
    peep = LSTM("peep", Wx=_w(rng, H, 4 * H), Wh=_w(rng, P, 4 * H), b=_w(rng, 4 * H), peepholes=_w(rng, 3, H),
                projection=_w(rng, H, P), clip=1.5, input_forget=True)  # fmt: skip
    gru = GRU("gru", Wx=_w(rng, P, 3 * H), Wh=_w(rng, H, 3 * H), bx=_w(rng, 3 * H), bh=_w(rng, 3 * H),
              reset_after=True, clip=0.8)  # fmt: skip
    rnn = SimpleRNN("rnn", Wx=_w(rng, H, H), Wh=_w(rng, H, H), b=_w(rng, H), activation="leaky_relu(alpha=0.5)")
    t = x
    for layer in (plain, peep, gru, rnn):
        (t,) = g.add_node(layer.name, layer, [t])
    graph = g.build([t], ["y"])
    fast, oracle = rnnstream.StreamModel(graph, backend="fused"), rnnstream.StreamModel(graph, backend="numpy")
    assert isinstance(fast.backend, fused.FusedBackend) and fast.backend.fused_nodes == ["plain"]
    state = oracle.initial_state(5)
    for _ in range(8):
        xs = rng.normal(0, 1, (5, F)).astype(np.float32)
        y_fast, s_fast = fast.step(xs, state)
        y_oracle, state = oracle.step(xs, state)
        np.testing.assert_allclose(y_fast, y_oracle, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(s_fast.rows, state.rows, rtol=1e-5, atol=1e-5)
