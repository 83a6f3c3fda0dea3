"""The torch backend and DeviceBatch against the NumPy oracle: every zoo model, every layer and mask
path, every activation, streams joining and leaving, and bad calls. Runs on torch's CPU device; the
CUDA tests at the end run only where torch sees a GPU."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import rnnstream
from rnnstream import InputError, MissingDependencyError, State, StateError, UnsupportedLayerError
from rnnstream.graph import GraphBuilder
from rnnstream.layers import activations, elementwise
from rnnstream.layers.conv import CausalConv1D
from rnnstream.layers.dense import Activation, Dense, Embedding, Identity, ReLU
from rnnstream.layers.elementwise import ConstantOp, ParametricActivation
from rnnstream.layers.features import FeatureReduce, FeatureSlice
from rnnstream.layers.layer import Layer, StatelessLayer, TensorSpec
from rnnstream.layers.merge import Concatenate, Masking, Merge
from rnnstream.layers.norm import LayerNorm
from rnnstream.layers.ops import Compare, ExpandDims, Fill, Join, Logical, Reduce
from rnnstream.layers.recurrent import GRU, LSTM, Recurrent, SimpleRNN
from rnnstream.layers.reshape import Permute, Reshape
from rnnstream.layers.sequence import LastStep
from tests.backends.conformance import TOLERANCE, Inputs, assert_agrees_step_by_step, listed, steps
from tests.zoo import ZooModel, feed, make_inputs

torch = pytest.importorskip("torch")
from rnnstream.backends import torch_activation_fns, torch_steps  # noqa: E402
from rnnstream.backends.torch import TorchBackend  # noqa: E402
from rnnstream.device_batch import DeviceBatch  # noqa: E402

CUDA = torch.cuda.is_available()


def backend_step(model: rnnstream.StreamModel) -> Callable[[Inputs, State], tuple[Any, State]]:
    torch_model = rnnstream.StreamModel(model.graph, backend="torch", device="cpu")
    return torch_model.step


def device_batch_step(model: rnnstream.StreamModel, **options: Any) -> Callable[[Inputs, State], tuple[Any, State]]:
    """A DeviceBatch loaded with the given state before each step (so load, step and state are all used)."""
    batch: DeviceBatch | None = None

    def step(x: Inputs, state: State) -> tuple[Any, State]:
        nonlocal batch
        if batch is None:
            batch = DeviceBatch(model, state, **options)
        else:
            batch.load(state)
        return batch.step(x), batch.state()

    return step


# -- every zoo model -------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 37])
def test_every_zoo_file_agrees_with_the_oracle(zoo_file: tuple[ZooModel, Path], batch: int) -> None:
    zoo, path = zoo_file
    zoo = dataclasses.replace(zoo, batch=batch)
    model = rnnstream.load(path).set_backend("torch", device="cpu")
    assert isinstance(model.backend, TorchBackend) and model.backend.host_nodes == {}  # every node in torch
    inputs = feed(zoo, make_inputs(zoo, 12, seed=batch))
    assert_agrees_step_by_step(model, inputs, batch, backend_step(model))
    assert_agrees_step_by_step(model, inputs, batch, device_batch_step(model, device="cpu"))


def test_many_device_steps_equal_stream_modelsteps(zoo_file: tuple[ZooModel, Path]) -> None:
    """Free-running for 30 steps, the device-resident state follows StreamModel.step's."""
    zoo, path = zoo_file
    zoo = dataclasses.replace(zoo, batch=5)
    model = rnnstream.load(path).set_backend("torch", device="cpu")
    batch, state = DeviceBatch(model, 5, device="cpu"), model.initial_state(5)
    for x in steps(feed(zoo, make_inputs(zoo, 30, seed=7))):
        y_device = batch.step(x)
        y_host, state = model.step(x, state)
        for ours, theirs in zip(listed(y_device), listed(y_host), strict=True):
            np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(batch.state().rows, state.rows, rtol=1e-6, atol=1e-6)


# -- layers and mask paths the zoo does not reach --------------------------------------------------


def _w(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.normal(0.0, 0.5, shape).astype(np.float32)


def _one_layer(layer: Layer, spec: TensorSpec) -> rnnstream.StreamModel:
    g = GraphBuilder()
    x = g.add_input("x", spec)
    (y, *_) = g.add_node(layer.name, layer, [x])
    return rnnstream.StreamModel(g.build([y], ["y"]), backend="torch", device="cpu")


def _check(model: rnnstream.StreamModel, inputs: Inputs, batch: int) -> None:
    assert model.backend.host_nodes == {}  # type: ignore[attr-defined]
    assert_agrees_step_by_step(model, inputs, batch, backend_step(model))
    assert_agrees_step_by_step(model, inputs, batch, device_batch_step(model, device="cpu"))


@pytest.mark.parametrize("name", activations.NAMES)
def test_every_activation(name: str) -> None:
    x = np.concatenate([np.linspace(-30, 30, 61), np.random.default_rng(3).normal(0, 3, 59)])
    x = x.astype(np.float32).reshape(3, 40)
    for keras_major in (2, 3):
        expected = activations.get(name, keras_major)(x)
        ours = torch_activation_fns.get(name, keras_major)(torch.from_numpy(x.copy()))
        np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("ract", ["sigmoid", "hard_sigmoid", "softmax", "sparsemax"])
@pytest.mark.parametrize("kind", ["lstm", "gru_after", "gru_before"])
def test_recurrent_activations_applied_per_gate(kind: str, ract: str, rng: np.random.Generator) -> None:
    """Grouped gates share one activation call only when it is elementwise; softmax-like ones see one
    gate at a time, as in the oracle."""
    H, I = 6, 3  # noqa: E741
    flags = {"recurrent_activation": ract, "activation": "softsign", "keras_major": 2}
    if kind == "lstm":
        layer: Recurrent = LSTM("l", Wx=_w(rng, I, 4 * H), Wh=_w(rng, H, 4 * H), b=_w(rng, 4 * H), **flags)
    else:
        after = kind == "gru_after"
        layer = GRU("g", Wx=_w(rng, I, 3 * H), Wh=_w(rng, H, 3 * H), bx=_w(rng, 3 * H),
                    bh=_w(rng, 3 * H) if after else None, reset_after=after, **flags)  # fmt: skip
    _check(_one_layer(layer, TensorSpec((I,))), rng.normal(0, 2, (4, 5, I)).astype(np.float32), 4)


def test_return_state_and_zero_output_for_mask(rng: np.random.Generator) -> None:
    g = GraphBuilder()
    x = g.add_input("x", TensorSpec((3,)))
    (m,) = g.add_node("mask", Masking("mask", mask_value=0.0), [x])
    lstm = LSTM("l", Wx=_w(rng, 3, 20), Wh=_w(rng, 5, 20), b=_w(rng, 20), return_state=True,
                zero_output_for_mask=True)  # fmt: skip
    y, h, c = g.add_node("l", lstm, [m])
    rnn = SimpleRNN("s", Wx=_w(rng, 5, 4), Wh=_w(rng, 4, 4), b=_w(rng, 4), activation="relu", return_sequences=False)
    (s,) = g.add_node("s", rnn, [y])
    model = rnnstream.StreamModel(g.build([y, h, c, s], ["y", "h", "c", "s"]), backend="torch", device="cpu")
    xs = rng.normal(0, 1, (6, 8, 3)).astype(np.float32)
    xs[rng.random((6, 8)) < 0.4] = 0.0
    _check(model, xs, 6)


def test_mask_ops_and_an_explicit_mask(rng: np.random.Generator) -> None:
    """Compare, Reduce (any/all, keepdims), Logical (not/and/or), ExpandDims, Fill and Join build the
    mask an LSTM is given explicitly, as Keras ≥ 3.10 writes them."""
    g = GraphBuilder()
    x = g.add_input("x", TensorSpec((4,)))
    (ne,) = g.add_node("ne", Compare("ne", op="not_equal", value=0.0), [x])  # (4,) bool
    (eq,) = g.add_node("eq", Compare("eq", op="equal", value=1.5), [x])  # (4,) bool
    (any_,) = g.add_node("any", Reduce("any", op="any", axes=(-1,), keepdims=False), [ne])  # () bool
    (all_,) = g.add_node("all", Reduce("all", op="all", axes=(-1,), keepdims=True), [eq])  # (1,) bool
    (not_,) = g.add_node("not", Logical("not", op="not"), [all_])  # (1,)
    (expand,) = g.add_node("expand", ExpandDims("expand", axis=-1), [any_])  # (1,)
    (ones,) = g.add_node("ones", Fill("ones", value=1.0, dtype="bool"), [expand])  # (1,)
    (joined,) = g.add_node("join", Join("join", axis=-1), [expand, not_, ones])  # (3,)
    (both,) = g.add_node("and", Logical("and", op="and"), [joined, joined])  # (3,)
    (mask,) = g.add_node("reduce", Reduce("reduce", op="all", axes=(-1,), keepdims=False), [both])  # ()
    (zeros,) = g.add_node("zeros", Fill("zeros", value=0.0, dtype="float32"), [x])  # (4,) float
    (either,) = g.add_node("or", Logical("or", op="or"), [mask, any_])
    lstm = LSTM("l", Wx=_w(rng, 4, 12), Wh=_w(rng, 3, 12), b=_w(rng, 12))
    (y,) = g.add_node("l", lstm, [x], mask=mask)
    model = rnnstream.StreamModel(g.build([y, zeros, either], ["y", "zeros", "either"]), backend="torch",
                                  device="cpu")  # fmt: skip
    xs = rng.normal(0, 1, (7, 6, 4)).astype(np.float32)
    xs[rng.random((7, 6)) < 0.3] = 0.0
    xs[:, 2, :] = 1.5
    _check(model, xs, 7)


@pytest.mark.parametrize("keras_major", [2, 3])
def test_merge_mask_rules(keras_major: int, rng: np.random.Generator) -> None:
    """Keras 2 ANDs the masks present; Keras 3 ORs them and drops the mask if one input has none."""
    g = GraphBuilder()
    x = g.add_input("x", TensorSpec((3,)))
    z = g.add_input("z", TensorSpec((3,)))
    (m,) = g.add_node("mask", Masking("mask", mask_value=0.0), [x])
    (n,) = g.add_node("mask2", Masking("mask2", mask_value=0.0), [z])
    (plain,) = g.add_node("plain", Identity("plain"), [z])
    (a,) = g.add_node("a", Dense("a", W=_w(rng, 3, 4), b=_w(rng, 4), activation="tanh"), [m])
    (b,) = g.add_node("b", Dense("b", W=_w(rng, 3, 4), b=None, activation="linear"), [n])
    (c,) = g.add_node("c", Dense("c", W=_w(rng, 3, 4), b=_w(rng, 4), activation="relu"), [plain])
    (both,) = g.add_node("both", Merge("both", op="maximum", keras_major=keras_major), [a, b])
    (one,) = g.add_node("one", Concatenate("one", axis=-1, keras_major=keras_major), [a, c])
    (h1,) = g.add_node("g1", GRU("g1", Wx=_w(rng, 4, 15), Wh=_w(rng, 5, 15), bx=_w(rng, 15), bh=None,
                                 reset_after=False), [both])  # fmt: skip
    (h2,) = g.add_node("g2", SimpleRNN("g2", Wx=_w(rng, 8, 5), Wh=_w(rng, 5, 5), b=_w(rng, 5)), [one])
    model = rnnstream.StreamModel(g.build([h1, h2], ["h1", "h2"]), backend="torch", device="cpu")
    xs = [rng.normal(0, 1, (5, 7, 3)).astype(np.float32) for _ in range(2)]
    for arr in xs:
        arr[rng.random((5, 7)) < 0.4] = 0.0
    _check(model, xs, 5)


def test_per_step_layers(rng: np.random.Generator) -> None:
    """ReLU with every option, Activation (glu halves the axis), LayerNorm without gamma/beta, Conv1D
    with kernel 1 (no state), Dense on a 2-D feature shape, token ids through an Identity."""
    g = GraphBuilder()
    ids = g.add_input("ids", TensorSpec((), dtype="int64"))
    (same,) = g.add_node("same", Identity("same"), [ids])
    (e,) = g.add_node("e", Embedding("e", E=_w(rng, 11, 6), mask_zero=False), [same])
    (r,) = g.add_node("r", ReLU("r", max_value=0.4, negative_slope=0.3, threshold=-0.1), [e])
    (glu,) = g.add_node("glu", Activation("glu", activation="glu"), [r])  # (3,)
    (ln,) = g.add_node("ln", LayerNorm("ln", gamma=None, beta=None, epsilon=1e-3), [glu])
    conv = CausalConv1D("k1", K=_w(rng, 1, 3, 4), b=None, dilation=1, activation="elu")
    (k1,) = g.add_node("k1", conv, [ln])
    (k3,) = g.add_node("k3", CausalConv1D("k3", K=_w(rng, 3, 4, 2), b=_w(rng, 2), dilation=3, activation="linear"),
                       [k1])  # fmt: skip
    (x2,) = g.add_node("x2", ExpandDims("x2", axis=-1), [k3])  # (2, 1)
    (d2,) = g.add_node("d2", Dense("d2", W=_w(rng, 1, 3), b=_w(rng, 3), activation="sigmoid"), [x2])  # (2, 3)
    model = rnnstream.StreamModel(g.build([d2, ln], ["d2", "ln"]), backend="torch", device="cpu")
    _check(model, rng.integers(0, 11, (6, 9)), 6)


def test_feature_axis_layers(rng: np.random.Generator) -> None:
    """Reshape, Permute, FeatureSlice (indices, forward and backward steps) and FeatureReduce (every op) run in
    torch, on the device: no node stays on the host."""
    g = GraphBuilder()
    x = g.add_input("x", TensorSpec((3,)))
    (h,) = g.add_node("l", GRU("l", Wx=_w(rng, 3, 36), Wh=_w(rng, 12, 36), bx=_w(rng, 36), bh=None,
                                reset_after=False, return_sequences=True), [x])  # fmt: skip
    (grid,) = g.add_node("grid", Reshape("grid", shape=(2, 3, 2)), [h])

    def chain(t: int, *layers: Layer) -> int:
        for layer in layers:
            (t,) = g.add_node(layer.name, layer, [t])
        return t

    ys = [
        chain(grid, Permute("p", perm=(2, 0, 1)), Reshape("back", shape=(12,)),
              Dense("d", W=_w(rng, 12, 4), b=_w(rng, 4), activation="tanh")),
        chain(grid, FeatureSlice("rev", index=((None, None, -1), (2, 0, -2)))),
        chain(grid, FeatureSlice("pick", index=(-1, (1, None, None), 0))),
        chain(grid, FeatureSlice("mid", index=((0, 1, None), (-2, None, 1)))),
        *(chain(grid, FeatureReduce(op, op=op, axes=axes, keepdims=keep))
          for op, axes, keep in [("mean", (-1,), True), ("sum", (-3, -1), False), ("max", (-2,), False),
                                 ("min", (-3, -2, -1), True)]),
    ]
    model = rnnstream.StreamModel(g.build(ys, [f"y{k}" for k in range(len(ys))]), backend="torch", device="cpu")
    _check(model, rng.normal(0, 1.5, (4, 6, 3)).astype(np.float32), 4)


# -- what the torch step does not cover runs in NumPy (host API) or is refused (DeviceBatch) -------


class Halve(StatelessLayer):
    """A layer class the torch backend has never heard of, with a mask rule of its own (it flips it)."""

    kind = "halve"

    def apply(self, inputs: list[np.ndarray]) -> np.ndarray:
        return inputs[0] * np.float32(0.5)

    def combine_masks(self, masks: list[np.ndarray | None]) -> np.ndarray | None:
        return None if masks[0] is None else ~masks[0]


def test_a_layer_without_a_torch_step_runs_in_numpy_and_device_batch_refuses_it(rng: np.random.Generator) -> None:
    g = GraphBuilder()
    x = g.add_input("x", TensorSpec((3,)))
    (m,) = g.add_node("mask", Masking("mask", mask_value=0.0), [x])
    (h,) = g.add_node("halve", Halve("halve"), [m])
    (y,) = g.add_node("l", LSTM("l", Wx=_w(rng, 3, 8), Wh=_w(rng, 2, 8), b=_w(rng, 8)), [h])
    model = rnnstream.StreamModel(g.build([y], ["y"]), backend="torch", device="cpu")
    assert model.backend.host_nodes == {"halve": "Halve layers have no torch step"}  # type: ignore[attr-defined]
    xs = rng.normal(0, 1, (4, 5, 3)).astype(np.float32)
    xs[rng.random((4, 5)) < 0.4] = 0.0
    assert_agrees_step_by_step(model, xs, 4, backend_step(model))
    with pytest.raises(UnsupportedLayerError, match=r"DeviceBatch.*'halve': Halve layers have no torch step"):
        DeviceBatch(model, 2, device="cpu")


def test_a_recurrent_subclass_and_an_unknown_option_are_refused_by_name(rng: np.random.Generator) -> None:
    """Neither may ever be computed as the plain cell."""

    class PeepholeLSTM(LSTM):
        pass

    cell = PeepholeLSTM("p", Wx=_w(rng, 2, 8), Wh=_w(rng, 2, 8), b=_w(rng, 8))
    backend = _one_layer(cell, TensorSpec((2,))).backend
    assert backend.host_nodes == {"p": "PeepholeLSTM layers have no torch step"}  # type: ignore[attr-defined]
    layer = LSTM("c", Wx=_w(rng, 2, 8), Wh=_w(rng, 2, 8), b=_w(rng, 8), clip=1.0, peepholes=_w(rng, 3, 2))
    plain_keys = frozenset({"units", "activation", "recurrent_activation", "keras_major", "return_sequences",
                            "return_state", "zero_output_for_mask"})  # fmt: skip
    assert torch_steps._unknown_options(layer, plain_keys, frozenset({"Wx", "Wh", "b"})) == (
        "weights peepholes have no torch step"
    )
    assert torch_steps._unknown_options(layer, plain_keys, frozenset({"Wx", "Wh", "b", "peepholes"})) == (
        "option clip=1.0 has no torch step"
    )


@pytest.mark.parametrize(
    "variant",
    [
        {"clip": 0.7},
        {"peepholes": True},
        {"input_forget": True, "clip": 2.0},
        {"cell_activation": "hard_sigmoid"},
        {"projection": True, "peepholes": True},
        {"activation": "scaled_tanh(alpha=1.5, beta=0.5)", "recurrent_activation": "hard_sigmoid(alpha=0.3, beta=0.4)"},
    ],
    ids=lambda v: "+".join(v),
)
def test_lstm_variants(variant: dict[str, Any], rng: np.random.Generator) -> None:
    """ONNX's and PyTorch's LSTM variants: clip, peepholes, input_forget, cell activation, projection."""
    H, I, P = 6, 3, 4  # noqa: E741
    options = dict(variant)
    if options.pop("peepholes", False):
        options["peepholes"] = _w(rng, 3, H)
    h_size = H
    if options.pop("projection", False):
        options["projection"], h_size = _w(rng, H, P), P
    layer = LSTM("l", Wx=_w(rng, I, 4 * H), Wh=_w(rng, h_size, 4 * H), b=_w(rng, 4 * H), return_state=True, **options)
    _check(_one_layer(layer, TensorSpec((I,))), rng.normal(0, 2, (5, 6, I)).astype(np.float32), 5)


@pytest.mark.parametrize("kind", ["gru_after", "gru_before", "simple_rnn"])
def test_clip_and_parametric_activations_of_gru_and_simple_rnn(kind: str, rng: np.random.Generator) -> None:
    H, I = 5, 3  # noqa: E741
    flags = {"clip": 0.8, "activation": "leaky_relu(alpha=0.1)", "recurrent_activation": "affine(alpha=0.2, beta=0.5)"}
    if kind == "simple_rnn":
        layer: Recurrent = SimpleRNN("s", Wx=_w(rng, I, H), Wh=_w(rng, H, H), b=_w(rng, H), **flags)
    else:
        after = kind == "gru_after"
        layer = GRU("g", Wx=_w(rng, I, 3 * H), Wh=_w(rng, H, 3 * H), bx=_w(rng, 3 * H),
                    bh=_w(rng, 3 * H) if after else None, reset_after=after, **flags)  # fmt: skip
    _check(_one_layer(layer, TensorSpec((I,))), rng.normal(0, 2, (4, 5, I)).astype(np.float32), 4)


def test_onnx_and_pytorch_glue_layers(rng: np.random.Generator) -> None:
    """ConstantOp (every operation), ParametricActivation (every kind) and LastStep."""
    g = GraphBuilder()
    x = g.add_input("x", TensorSpec((4,)))
    ys = []
    for k, op in enumerate(elementwise.OPS):
        constant = rng.uniform(0.5, 2.0, (4,) if k % 2 else ()).astype(np.float32)
        ys += g.add_node(f"c{k}", ConstantOp(f"c{k}", op=op, constant=constant), [x])
    for kind, (names, _) in elementwise.PARAMETRIC.items():
        name = elementwise.parametric_name(kind, **{p: float(rng.uniform(0.2, 1.5)) for p in names})
        ys += g.add_node(kind, ParametricActivation(kind, activation=name), [x])
    (h,) = g.add_node("l", SimpleRNN("l", Wx=_w(rng, 4, 3), Wh=_w(rng, 3, 3), b=_w(rng, 3)), [ys[-1]])
    (last,) = g.add_node("last", LastStep("last"), [h])
    model = rnnstream.StreamModel(g.build([last, *ys], [f"y{k}" for k in range(len(ys) + 1)]), backend="torch",
                                  device="cpu")  # fmt: skip
    _check(model, rng.normal(0, 1.5, (3, 5, 4)).astype(np.float32), 3)


# -- DeviceBatch -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def seed() -> rnnstream.StreamModel:
    return rnnstream.load(rnnstream.demo.SEED_MODEL, backend="numpy")


def _xs(rng: np.random.Generator, batch: int) -> np.ndarray:
    return rng.normal(0, 1, (batch, 4)).astype(np.float32)


def test_streams_join_and_leave_by_row(seed: rnnstream.StreamModel, rng: np.random.Generator) -> None:
    batch = DeviceBatch(seed, 3, device="cpu")
    state = seed.initial_state(3)
    for _ in range(3):
        x = _xs(rng, 3)
        batch.step(x)
        _, state = seed.step(x, state)
    joined = seed.step(_xs(rng, 2), seed.initial_state(2))[1]
    assert batch.add(joined) == [3, 4] and batch.add(1) == [5]
    state = State.concat([state, joined, seed.initial_state(1)])
    batch.remove([4, 1])
    state = state.select([0, 2, 3, 5])
    assert batch.batch_size == len(batch) == 4
    for _ in range(4):
        x = _xs(rng, 4)
        y_device = batch.step(x)
        y, state = seed.step(x, state)
        np.testing.assert_allclose(y_device, y, **TOLERANCE)
    np.testing.assert_allclose(batch.state().rows, state.rows, **TOLERANCE)


def test_load_and_state_round_trip(seed: rnnstream.StreamModel, rng: np.random.Generator) -> None:
    _, state = seed.step(_xs(rng, 5), seed.initial_state(5))
    batch = DeviceBatch(seed, 2, device="cpu")
    batch.load(state)
    assert batch.batch_size == 5 and batch.state() == state
    fresh = seed.initial_state(2)
    batch.load(fresh, rows=[4, 0])
    assert batch.state() == State.concat([fresh.select([0]), state.select([1, 2, 3]), fresh.select([0])])
    kept = batch.state()
    kept_rows = kept.rows.copy()
    batch.step(_xs(rng, 5))
    np.testing.assert_array_equal(kept.rows, kept_rows)  # a State from state() is a copy, not a window
    assert batch.state() != kept


def test_another_models_state_and_bad_rows_are_refused(seed: rnnstream.StreamModel, rng: np.random.Generator) -> None:
    other = _one_layer(Dense("d", W=_w(rng, 4, 1), b=None, activation="linear"), TensorSpec((4,)))
    batch = DeviceBatch(seed, 3, device="cpu")
    batch.step(_xs(rng, 3))
    before = batch.state()
    foreign = State(np.zeros((3, seed.state_size), np.float32), other.fingerprint)
    with pytest.raises(StateError, match="another model"):
        batch.load(foreign)
    with pytest.raises(StateError, match="another model"):
        batch.add(foreign)
    with pytest.raises(StateError, match="another model"):
        DeviceBatch(seed, foreign, device="cpu")
    for call, message in [
        (lambda: batch.remove([0, 1, 2]), "at least one stream"),
        (lambda: batch.remove([3]), r"in 0\.\.2 \(\[3\] are not\)"),
        (lambda: batch.remove([1, 1]), "distinct"),
        (lambda: batch.remove([]), "non-empty"),
        (lambda: batch.remove([True]), "row numbers"),
        (lambda: batch.load(seed.initial_state(2), rows=[0]), "1 rows given for a state of 2"),
        (lambda: batch.step(np.zeros((2, 4), np.float32)), "batch size 2, but the state holds 3"),
        (lambda: batch.step(np.full((3, 4), np.nan, np.float32), check_finite=True), "non-finite"),
    ]:
        with pytest.raises(InputError, match=message):
            call()
        assert batch.state() == before


def test_token_ids_out_of_range_change_nothing(rng: np.random.Generator) -> None:
    g = GraphBuilder()
    ids = g.add_input("ids", TensorSpec((), dtype="int64"))
    (e,) = g.add_node("e", Embedding("e", E=_w(rng, 5, 3), mask_zero=True), [ids])
    (y,) = g.add_node("g", GRU("g", Wx=_w(rng, 3, 6), Wh=_w(rng, 2, 6), bx=_w(rng, 6), bh=_w(rng, 6),
                               reset_after=True), [e])  # fmt: skip
    model = rnnstream.StreamModel(g.build([y], ["y"]), backend="torch", device="cpu")
    batch = DeviceBatch(model, 2, device="cpu")
    batch.step(np.array([1, 4]))
    before = batch.state()
    for bad in ([1, 5], [-1, 0]):
        with pytest.raises(InputError, match=r"out of range for Embedding 'e' \(vocabulary of 5"):
            batch.step(np.array(bad))
        with pytest.raises(InputError, match="out of range"):
            model.step(np.array(bad), model.initial_state(2))
        assert batch.state() == before


def test_graphs_per_batch_size_are_bounded(seed: rnnstream.StreamModel) -> None:
    batch = DeviceBatch(seed, 1, device="cpu", max_graphs=2)
    assert not batch.captured  # CUDA graphs only on a CUDA device
    for _ in range(4):
        batch.add(1)
    assert batch.batch_size == 5 and sorted(batch._steps) == [4, 5]
    with pytest.raises(InputError, match="max_graphs"):
        DeviceBatch(seed, 1, device="cpu", max_graphs=0)


def test_device_batch_reuses_the_models_torch_weights(seed: rnnstream.StreamModel) -> None:
    model = rnnstream.StreamModel(seed.graph, backend="torch", device="cpu")
    assert DeviceBatch(model, 1, device="cpu")._program is model.backend.program  # type: ignore[attr-defined]
    assert DeviceBatch(seed, 1, device="cpu")._program is not model.backend.program  # type: ignore[attr-defined]


# -- choosing the backend and the device -----------------------------------------------------------


def test_set_backend_keeps_states_valid(seed: rnnstream.StreamModel, rng: np.random.Generator) -> None:
    model = rnnstream.StreamModel(seed.graph, backend="numpy")
    x = _xs(rng, 2)
    _, state = model.step(x, model.initial_state(2))
    y_numpy, s_numpy = model.step(x, state)
    y_torch, s_torch = model.set_backend("torch", device="cpu").step(x, state)
    assert model.backend.name == "torch" and s_torch.fingerprint == s_numpy.fingerprint
    np.testing.assert_allclose(y_torch, y_numpy, **TOLERANCE)
    np.testing.assert_allclose(s_torch.rows, s_numpy.rows, **TOLERANCE)


def test_outputs_never_alias_the_state_or_the_input(seed: rnnstream.StreamModel) -> None:
    model = rnnstream.StreamModel(seed.graph, backend="torch", device="cpu")
    x = np.ones((2, 4), np.float32)
    y, state = model.step(x, model.initial_state(2))
    kept = state.rows.copy()
    y += 100.0
    np.testing.assert_array_equal(state.rows, kept)
    passthrough = _one_layer(Identity("same"), TensorSpec((4,)))
    y_same, _ = passthrough.step(x, passthrough.initial_state(2))
    assert not np.shares_memory(y_same, x)
    y_batch = DeviceBatch(passthrough, 2, device="cpu").step(x)
    assert not np.shares_memory(y_batch, x)


def test_auto_follows_the_environment(seed: rnnstream.StreamModel, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RNNSTREAM_BACKEND", "torch")
    assert rnnstream.StreamModel(seed.graph).backend.name == "torch"


@pytest.mark.parametrize(
    ("backend", "device", "error", "message"),
    [
        ("torch", "tpu", InputError, "'tpu' is not a torch device"),
        ("torch", "meta", InputError, "runs on 'cpu' or 'cuda', not 'meta'"),
        ("numpy", "cuda", InputError, "applies to backend 'torch' only"),
        pytest.param(
            "torch", "cuda", MissingDependencyError, "sees no CUDA GPU",
            marks=pytest.mark.skipif(CUDA, reason="torch sees a GPU here"),
        ),
    ],
)
def test_bad_devices_are_refused(
    seed: rnnstream.StreamModel, backend: str, device: str, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        rnnstream.StreamModel(seed.graph, backend=backend, device=device)
    if backend == "torch":
        with pytest.raises(error, match=message):
            DeviceBatch(seed, 1, device=device)


def test_without_torch_the_backend_says_what_to_install() -> None:
    code = (
        "import sys\n"
        "sys.modules['torch'] = None  # as if torch were not installed\n"
        "import rnnstream\n"
        "try:\n"
        "    rnnstream.load(rnnstream.demo.SEED_MODEL, backend='torch')\n"
        "except rnnstream.MissingDependencyError as error:\n"
        "    print(error)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[2])  # fmt: skip
    assert "pip install 'rnnstream[torch]'" in done.stdout, done.stderr[-2000:]


# -- CUDA: only where torch sees a GPU -------------------------------------------------------------


@pytest.mark.skipif(not CUDA, reason="torch sees no CUDA GPU")
@pytest.mark.parametrize("batch", [1, 37])
def test_cuda_graphs_agree_with_the_oracle(zoo_file: tuple[ZooModel, Path], batch: int) -> None:
    zoo, path = zoo_file
    zoo = dataclasses.replace(zoo, batch=batch)
    model = rnnstream.load(path, backend="torch")
    inputs = feed(zoo, make_inputs(zoo, 12, seed=batch))
    assert_agrees_step_by_step(model, inputs, batch, rnnstream.StreamModel(model.graph, backend="torch",
                                                                           device="cuda").step)  # fmt: skip
    assert_agrees_step_by_step(model, inputs, batch, device_batch_step(model, device="cuda"))
    graph_batch = DeviceBatch(model, batch, device="cuda")
    assert graph_batch.captured


@pytest.mark.skipif(not CUDA, reason="torch sees no CUDA GPU")
def test_cuda_graph_replays_follow_eagersteps(seed: rnnstream.StreamModel, rng: np.random.Generator) -> None:
    captured = DeviceBatch(seed, 3, device="cuda")
    eager = DeviceBatch(seed, 3, device="cuda", cuda_graphs=False)
    assert captured.captured and not eager.captured
    for size in (3, 5, 4):
        if size > captured.batch_size:
            captured.add(size - captured.batch_size)
            eager.add(size - eager.batch_size)
        elif size < captured.batch_size:
            captured.remove([0])
            eager.remove([0])
        for _ in range(10):
            x = _xs(rng, size)
            np.testing.assert_allclose(captured.step(x), eager.step(x), **TOLERANCE)
    np.testing.assert_allclose(captured.state().rows, eager.state().rows, **TOLERANCE)
