"""The fused backend against the NumPy oracle: every zoo model, kernel edge sizes, threads, bad calls."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import rnnstream
from rnnstream.backends import fused, packing
from rnnstream.graph import GraphBuilder
from rnnstream.layers.dense import Dense
from rnnstream.layers.layer import Layer, TensorSpec
from rnnstream.layers.recurrent import GRU, LSTM, SimpleRNN
from rnnstream.state import State
from tests.backends.conformance import TOLERANCE, assert_agrees_step_by_step, in_forked_child
from tests.zoo import ZooModel, feed, make_inputs

pytestmark = pytest.mark.skipif(not fused.available(), reason="the fused kernel is not built")


def assert_backends_agree(model: rnnstream.StreamModel, inputs: Any, batch: int, *, threads: int = 2) -> None:
    """The fused step equals the oracle's, step by step from the oracle's own states."""
    fast = rnnstream.StreamModel(model.graph, backend="fused", threads=threads)
    assert_agrees_step_by_step(model, inputs, batch, fast.step)


@pytest.mark.parametrize("batch", [1, 37])
def test_every_zoo_model_agrees_with_the_oracle(zoo_file: tuple[ZooModel, Path], batch: int) -> None:
    zoo, path = zoo_file
    zoo = dataclasses.replace(zoo, batch=batch)
    model = rnnstream.load(path, backend="fused")
    assert_backends_agree(model, feed(zoo, make_inputs(zoo, 20, seed=batch)), batch)


def _single_layer_model(layer: Layer, features: int) -> rnnstream.StreamModel:
    g = GraphBuilder()
    x = g.add_input("x", TensorSpec((features,)))
    (y, *_) = g.add_node(layer.name, layer, [x])
    return rnnstream.StreamModel(g.build([y], ["y"]), backend="fused")


def _weights(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.normal(0.0, 0.5, shape).astype(np.float32)


# Sizes around the kernel's vector width (16 on AVX-512, 8 on AVX2) and its 4-vector panels.
UNITS = [1, 7, 16, 17, 33, 64, 65, 130]


def _layer(kind: str, units: int, features: int, rng: np.random.Generator, activation: str) -> Layer:
    if kind == "lstm":
        return LSTM(
            "l", Wx=_weights(rng, features, 4 * units), Wh=_weights(rng, units, 4 * units), b=_weights(rng, 4 * units)
        )
    if kind == "gru":
        return GRU(
            "g",
            Wx=_weights(rng, features, 3 * units),
            Wh=_weights(rng, units, 3 * units),
            bx=_weights(rng, 3 * units),
            bh=_weights(rng, 3 * units),
            reset_after=True,
        )
    if kind == "simple_rnn":
        return SimpleRNN(
            "s",
            Wx=_weights(rng, features, units),
            Wh=_weights(rng, units, units),
            b=_weights(rng, units),
            activation=activation,
        )
    return Dense("d", W=_weights(rng, features, units), b=_weights(rng, units), activation=activation)


@pytest.mark.parametrize("units", UNITS)
@pytest.mark.parametrize("kind", ["lstm", "gru", "simple_rnn", "dense"])
def test_kernel_sizes(kind: str, units: int, rng: np.random.Generator) -> None:
    features = 1 + units % 5
    model = _single_layer_model(_layer(kind, units, features, rng, "tanh"), features)
    assert isinstance(model.backend, fused.FusedBackend) and model.backend.fused_nodes == [model.graph.nodes[0].name]
    for batch in (1, 5, 37):
        assert_backends_agree(model, rng.normal(0, 2, (batch, 6, features)).astype(np.float32), batch)


# Widths whose last panel is partly used: 1 to 4 slots of a Dense or SimpleRNN panel (64 units on AVX-512),
# at most or more than half a vector of an LSTM or GRU panel's units (16).
LAST_PANEL_UNITS = {"act": [1, 15, 16, 17, 31, 33, 63, 64, 65], "gated": [1, 7, 8, 9, 15, 16, 17, 100, 200]}


@pytest.mark.parametrize("precision", ["fp32", "bf16-widen", "bf16-dot", "int8"])
@pytest.mark.parametrize("kind", ["lstm", "gru", "simple_rnn", "dense"])
def test_partly_used_last_panels(kind: str, precision: str, rng: np.random.Generator) -> None:
    """A last panel computes only the slots a Dense or SimpleRNN layer uses, and only the low half of each
    slot's vector for an LSTM or GRU with at most 8 units left in it (AVX-512); every tile height."""
    if precision == "bf16-dot" and not fused.bf16_dot():
        pytest.skip("this CPU has no AVX512_BF16")
    if precision == "int8" and not fused.int8():
        pytest.skip("the kernel has no int8 path here (AVX512_VNNI or AVX2)")
    for units in LAST_PANEL_UNITS["gated" if kind in ("lstm", "gru") else "act"]:
        model = _single_layer_model(_layer(kind, units, 19, rng, "tanh"), 19)
        model.set_backend("fused", precision=precision, threads=2)
        for batch in (1, 2, 3, 4, 5, 6, 7, 300):
            xs = rng.normal(0, 2, (batch, 2, 19)).astype(np.float32)
            assert_agrees_step_by_step(model, xs, batch, model.step, precision=precision)


@pytest.mark.parametrize("precision", ["fp32", "bf16-widen"])
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_joined_halves_give_the_same_bits(kind: str, precision: str, rng: np.random.Generator) -> None:
    """A gated layer's last panel of at most 8 units: tiles of 3 to 6 rows join two slots' halves per vector
    (fused_low.h), tiles of 1 and 2 keep them apart; each row's sums are the same, in the same order, so its
    outputs and state are the same bits either way. AVX-512 only: AVX2 tiles hold 1 or 2 rows, and a row alone
    in its tile sums odd and even inputs apart (fused_accumulate.h)."""
    if fused.instruction_set() != "avx512":
        pytest.skip("the AVX-512 kernel is not chosen here: no joined halves")
    for units in (8, 20, 36):  # last panels of 8, 4 and 4 units
        model = _single_layer_model(_layer(kind, units, 19, rng, "tanh"), 19)
        model.set_backend("fused", precision=precision, threads=1)
        for batch in (3, 4, 5, 6):
            x = rng.normal(0, 2, (batch, 19)).astype(np.float32)
            state = State(rng.normal(0, 1, (batch, model.state_size)).astype(np.float32), model.fingerprint)
            y, new = model.step(x, state)
            for r0 in (0, batch - 2):  # rows alone in tiles of 2
                pair = State(state.rows[r0 : r0 + 2], model.fingerprint)
                y_pair, new_pair = model.step(x[r0 : r0 + 2], pair)
                assert np.array_equal(y_pair, y[r0 : r0 + 2]) and np.array_equal(new_pair.rows, new.rows[r0 : r0 + 2])


@pytest.mark.parametrize("kind", ["lstm", "gru", "simple_rnn", "dense"])
def test_long_rows_and_many_blocks(kind: str, rng: np.random.Generator) -> None:
    """Batches from 6 rows on take the blocked path: 370 inputs span two k-blocks (the second partial),
    101 rows three row blocks (the last a partial tile)."""
    model = _single_layer_model(_layer(kind, 70, 300, rng, "tanh"), 300)
    for batch in (6, 101):
        assert_backends_agree(model, rng.normal(0, 1, (batch, 3, 300)).astype(np.float32), batch)


@pytest.mark.parametrize("kind", ["simple_rnn", "dense"])
def test_narrow_layers_run_dot_products(kind: str, rng: np.random.Generator) -> None:
    """Dense and SimpleRNN layers of at most 4 units, from 8 rows on, run one dot product per output along the
    inputs (fused_narrow.h): inputs around the vectors' multiples (the last vector part-filled, or none), many
    inputs, 5 units (the panel path), 7 and 8 rows (its threshold), 13 and 301 (a last vector of rows part-filled),
    one thread and two."""
    for units, features in [(1, 1), (2, 7), (3, 16), (4, 17), (1, 33), (4, 200), (5, 40), (1, 2049)]:
        model = _single_layer_model(_layer(kind, units, features, rng, "sigmoid"), features)
        for threads in (1, 2):
            model.set_backend("fused", threads=threads)
            for batch in (7, 8, 13, 301):
                xs = rng.normal(0, 1, (batch, 2, features)).astype(np.float32)
                assert_agrees_step_by_step(model, xs, batch, model.step)


@pytest.mark.parametrize("activation", ["linear", "tanh", "sigmoid", "relu", "softmax", "elu"])
@pytest.mark.parametrize("kind", ["simple_rnn", "dense"])
def test_activations(kind: str, activation: str, rng: np.random.Generator) -> None:
    """The kernel's own activations, and ones it leaves to NumPy (softmax, elu)."""
    model = _single_layer_model(_layer(kind, 23, 4, rng, activation), 4)
    assert_backends_agree(model, rng.normal(0, 3, (9, 5, 4)).astype(np.float32), 9)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_thread_counts_agree(threads: int, rng: np.random.Generator) -> None:
    model = _single_layer_model(_layer("lstm", 200, 100, rng, "tanh"), 100)
    assert_backends_agree(model, rng.normal(0, 1, (64, 4, 100)).astype(np.float32), 64, threads=threads)


@pytest.mark.parametrize("precision", ["fp32", "bf16-dot", "int8"])
def test_threads_stepping_at_once_each_get_their_own_results(precision: str, rng: np.random.Generator) -> None:
    """Callers on several threads share the kernel's helper threads (one at a time; the others run alone, their
    row blocks panel by panel): every result is the one-thread step's, to the bit, at 64 and 257 rows."""
    if precision == "bf16-dot" and not fused.bf16_dot():
        pytest.skip("this CPU has no AVX512_BF16")
    if precision == "int8" and not fused.int8():
        pytest.skip("the kernel has no int8 path here (AVX512_VNNI or AVX2)")
    graph = _single_layer_model(_layer("lstm", 200, 100, rng, "tanh"), 100).graph
    alone = rnnstream.StreamModel(graph, backend="fused", threads=1, precision=precision)
    model = rnnstream.StreamModel(alone.graph, backend="fused", threads=2, precision=precision)
    xs = [rng.normal(0, 1, (batch, 100)).astype(np.float32) for batch in (64, 257, 64, 257)]
    expected = [alone.step(x, alone.initial_state(len(x)))[0] for x in xs]
    failures: list[str] = []

    def caller(k: int) -> None:
        for _ in range(50):
            y, _ = model.step(xs[k], model.initial_state(len(xs[k])))
            if not np.array_equal(y, expected[k]):
                failures.append(f"caller {k}: largest difference {np.max(np.abs(y - expected[k])):.2e}")
                return

    threads = [threading.Thread(target=caller, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures


def test_steps_after_a_pause_keep_their_bits(rng: np.random.Generator) -> None:
    """After 0.25 s without a step the pool forgets that its helpers were late (work_pool.c: LATE_FORGOTTEN_NS),
    under the lock of the step that finds it: two threads stepping, each pausing past that halfway, get every
    result of the one-thread step to the bit."""
    graph = _single_layer_model(_layer("lstm", 200, 100, rng, "tanh"), 100).graph
    alone = rnnstream.StreamModel(graph, backend="fused", threads=1)
    model = rnnstream.StreamModel(graph, backend="fused", threads=2)
    x = rng.normal(0, 1, (257, 100)).astype(np.float32)
    expected = alone.step(x, alone.initial_state(257))[0]
    results: list[bool] = []

    def caller() -> None:
        for k in range(40):
            if k == 20:
                time.sleep(0.3)
            results.append(np.array_equal(model.step(x, model.initial_state(257))[0], expected))

    callers = [threading.Thread(target=caller) for _ in range(2)]
    for thread in callers:
        thread.start()
    for thread in callers:
        thread.join(timeout=60)
    assert results == [True] * 80


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_a_forked_child_steps_on_its_own_helpers(rng: np.random.Generator) -> None:
    model = _single_layer_model(_layer("lstm", 200, 100, rng, "tanh"), 100)
    model.set_backend("fused", threads=2)
    x = rng.normal(0, 1, (64, 100)).astype(np.float32)
    y, _ = model.step(x, model.initial_state(64))  # the parent's helper threads are running now
    # The child has no helper threads until it starts its own.
    produced = in_forked_child(lambda: np.asarray(model.step(x, model.initial_state(64))[0], np.float32).tobytes())
    np.testing.assert_array_equal(np.frombuffer(produced, np.float32).reshape(y.shape), y)


def test_extreme_inputs_saturate_like_the_oracle(rng: np.random.Generator) -> None:
    model = _single_layer_model(_layer("lstm", 20, 3, rng, "tanh"), 3)
    x = np.float32([[[1e4, -1e4, 0.0]], [[-1e30, 1e30, 3e-8]], [[88.5, -87.5, 1e-40]]])  # (3, 1, 3)
    assert_backends_agree(model, x, 3)


def test_layers_it_does_not_fuse_run_in_numpy() -> None:
    model = rnnstream.load(rnnstream.demo.SEED_MODEL, backend="fused")
    assert model.backend.fused_nodes == ["lstm1", "lstm2", "output"]  # type: ignore[attr-defined]
    rng = np.random.default_rng(0)
    hard = LSTM(
        "hard",
        Wx=_weights(rng, 2, 12),
        Wh=_weights(rng, 3, 12),
        b=_weights(rng, 12),
        recurrent_activation="hard_sigmoid",
    )
    before = GRU(
        "before", Wx=_weights(rng, 2, 9), Wh=_weights(rng, 3, 9), bx=_weights(rng, 9), bh=None, reset_after=False
    )
    for layer in (hard, before):
        model = _single_layer_model(layer, 2)
        assert model.backend.fused_nodes == []  # type: ignore[attr-defined]
        assert_backends_agree(model, rng.normal(0, 1, (4, 3, 2)).astype(np.float32), 4)


def test_outputs_never_alias_the_state() -> None:
    """A recurrent output is written into the new state row; the caller must get its own copy."""
    model = _single_layer_model(_layer("lstm", 8, 2, np.random.default_rng(1), "tanh"), 2)
    y, state = model.step(np.ones((2, 2), np.float32), model.initial_state(2))
    kept = state.rows.copy()
    y += 100.0
    np.testing.assert_array_equal(state.rows, kept)


def test_the_kernel_refuses_arrays_that_do_not_fit() -> None:
    """The C entry points check every array, so a wrong call is a ValueError, never a bad read or write."""
    from rnnstream.backends import _fused  # type: ignore[attr-defined]

    rng = np.random.default_rng(2)
    W, b = _weights(rng, 3, 5), _weights(rng, 5)
    p = packing.pack_act(W, b, lanes=_fused.isa()[1])
    plan = _fused.make_plan(p.epilogue, p.activation, p.weights, p.bias, p.panels, 3, 0, 5, 0, -1)
    x, state, out = np.ones((4, 3), np.float32), np.zeros((4, 0), np.float32), np.empty((4, 5), np.float32)

    def call(x: Any = x, state: Any = state, out: Any = out) -> None:
        _fused.step(plan, x, state, np.empty_like(state), out, 2)

    call()
    np.testing.assert_allclose(out, x @ W + b, **TOLERANCE)
    for bad in [
        {"x": np.ones((4, 3), np.float64)},
        {"x": np.ones((4, 2), np.float32)},
        {"x": np.ones((4, 6), np.float32)[:, ::2]},
        {"x": None},
        {"state": np.zeros((3, 0), np.float32)},
        {"out": np.empty((3, 5), np.float32)},
        {"out": np.empty((4, 5), np.int32)},
        {"out": np.empty((4, 5), np.float32)[:, ::-1]},
    ]:
        with pytest.raises(ValueError):
            call(**bad)
    readonly = np.empty((4, 5), np.float32)
    readonly.flags.writeable = False
    with pytest.raises(ValueError, match="writable"):
        call(out=readonly)
    for weights, bias, units in [(p.weights[:-1], p.bias, 5), (p.weights, p.bias[1:], 5), (p.weights, p.bias, 500)]:
        with pytest.raises(ValueError):
            _fused.make_plan(p.epilogue, p.activation, weights, bias, p.panels, 3, 0, units, 0, -1)
    with pytest.raises(ValueError):  # an LSTM plan whose state columns lie beyond the state row
        lstm = packing.pack_lstm(_weights(rng, 3, 8), _weights(rng, 2, 8), _weights(rng, 8), lanes=_fused.isa()[1])
        lstm_plan = _fused.make_plan(lstm.epilogue, 0, lstm.weights, lstm.bias, lstm.panels, 3, 2, 2, 10, -1)
        _fused.step(lstm_plan, x, np.zeros((4, 12), np.float32), np.zeros((4, 12), np.float32), None, 1)


def test_unknown_backend_is_a_clear_error() -> None:
    with pytest.raises(rnnstream.InputError, match=r"unknown backend 'gpu'.*numpy"):
        rnnstream.load(rnnstream.demo.SEED_MODEL, backend="gpu")


def test_set_backend_keeps_states_valid() -> None:
    model = rnnstream.load(rnnstream.demo.SEED_MODEL, backend="numpy")
    x = np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 4)
    _, state = model.step(x, model.initial_state(2))
    y_numpy, _ = model.step(x, state)
    y_fused, _ = model.set_backend("fused", threads=1).step(x, state)
    assert model.backend.name == "fused"
    np.testing.assert_allclose(y_fused, y_numpy, **TOLERANCE)


@pytest.mark.parametrize("isa", ["avx2", "portable"])
def test_narrower_instruction_sets_agree(isa: str) -> None:
    """The AVX2 and portable builds of the kernel, forced on this CPU, agree with the oracle too."""
    code = (
        "import numpy as np, rnnstream\n"
        "from rnnstream.backends import fused\n"
        f"assert fused.instruction_set() == {isa!r}, fused.instruction_set()\n"
        "from tests.backends.test_fused import UNITS, _layer, _single_layer_model, assert_backends_agree\n"
        "rng = np.random.default_rng(4)\n"
        "for kind in ('lstm', 'gru', 'simple_rnn', 'dense'):\n"
        "    for units in UNITS:\n"
        "        model = _single_layer_model(_layer(kind, units, 3, rng, 'tanh'), 3)\n"
        "        for batch in (1, 7, 37):\n"
        "            assert_backends_agree(model, rng.normal(0, 2, (batch, 3, 3)).astype(np.float32), batch)\n"
        "    model = _single_layer_model(_layer(kind, 70, 300, rng, 'tanh'), 300)\n"
        "    assert_backends_agree(model, rng.normal(0, 1, (101, 3, 300)).astype(np.float32), 101)\n"
        "print('ok')\n"
    )
    env = {**os.environ, "RNNSTREAM_KERNEL_ISA": isa}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[2])  # fmt: skip
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


@pytest.mark.parametrize("precision", ["fp32", "bf16-widen", "bf16-dot", "int8"])
def test_every_split_of_the_work_gives_the_same_bits(precision: str, rng: np.random.Generator) -> None:
    """One thread steps tiles panel by panel. Several threads take row blocks instead (each computing every
    panel of its rows) from two blocks of 8 tiles of 6 rows per thread on (AVX-512), or of 2 tiles and
    more where the layer's weights are at most 1 MB; below that, or for larger weights, panels. Every tile
    sums in the same order either way, so the outputs and states are the same bits: 1, 2 and 3 threads;
    20 rows (panels), 64 and 95 (small blocks, or panels for the LSTM(256) on 300 inputs: 2.3 MB of
    weights at fp32, 0.6 MB at int8, which takes small blocks), 257 (a last tile of 5 rows, a last block of
    3 tiles) and 301. bf16-dot and int8 rows are rounded block by block on the row-block path; past 1,024
    blocks (50,000 rows) all first, as on the others. A step whose helpers were late runs its row blocks
    alone, panel by panel: the same bits too."""
    if precision == "bf16-dot" and not fused.bf16_dot():
        pytest.skip("this CPU has no AVX512_BF16")
    if precision == "int8" and not fused.int8():
        pytest.skip("the kernel has no int8 path here (AVX512_VNNI or AVX2)")
    sizes = (20, 64, 95, 257, 301)
    cases = [(_layer(kind, 200, 100, rng, "tanh"), 100, sizes) for kind in ("lstm", "gru", "dense")]
    cases += [(_layer("lstm", 256, 300, rng, "tanh"), 300, sizes), (_layer("lstm", 8, 3, rng, "tanh"), 3, (50_000,))]
    for layer, features, batches in cases:
        model = _single_layer_model(layer, features)
        for batch in batches:
            x = rng.normal(0, 1, (batch, features)).astype(np.float32)
            state = State(rng.normal(0, 1, (batch, model.state_size)).astype(np.float32), model.fingerprint)
            other = rnnstream.StreamModel(model.graph, backend="fused", threads=1, precision=precision)
            results = [_step_after_another(model.set_backend("fused", precision=precision, threads=t), other, x, state)
                       for t in (1, 2, 3)]  # fmt: skip
            for y, new_state in results[1:]:
                assert np.array_equal(y, results[0][0]) and np.array_equal(new_state.rows, results[0][1].rows)


def _step_after_another(
    model: rnnstream.StreamModel, other: rnnstream.StreamModel, x: np.ndarray, state: State
) -> tuple[Any, State]:
    """``model.step(x, state)`` right after ``other`` (on one thread, which rounds every row) stepped other rows,
    leaving them in the kernel's buffers: a row the step failed to round anew would keep the other's value."""
    other.step(3 * x[::-1], other.initial_state(len(x)))
    return model.step(x, state)
