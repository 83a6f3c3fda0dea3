"""StreamModel.launch: the fused step run on the kernel's runner thread, announced on a file descriptor."""

from __future__ import annotations

import dataclasses
import os
import select
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import rnnstream
from rnnstream.backends import fused
from rnnstream.demo import builtin
from rnnstream.errors import InputError
from rnnstream.model import PendingStep
from rnnstream.state import State
from tests.backends.conformance import assert_agrees_step_by_step, in_forked_child, listed
from tests.backends.test_fused import _layer, _single_layer_model
from tests.zoo import ZooModel, feed, make_inputs

pytestmark = pytest.mark.skipif(not fused.available(), reason="the fused kernel is not built")


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read, write = os.pipe()
    os.set_blocking(read, False)
    yield read, write
    os.close(read)
    os.close(write)


def wait(read: int, pending: PendingStep, timeout: float = 30.0) -> None:
    """Block until the runner has written to the pipe for ``pending``, as an event loop would."""
    while not pending.done():
        ready, _, _ = select.select([read], [], [], timeout)
        assert ready, "the runner never wrote to the pipe"
        os.read(read, 4096)


def launched_step(model: rnnstream.StreamModel, pipe: tuple[int, int]) -> Any:
    def step(x: Any, state: State) -> tuple[Any, State]:
        pending = model.launch(x, state, pipe[1])
        wait(pipe[0], pending)
        return pending.result()

    return step


@pytest.mark.parametrize("batch", [1, 37])
def test_every_launchable_zoo_model_agrees_with_the_oracle(
    zoo_file: tuple[ZooModel, Path], batch: int, pipe: tuple[int, int]
) -> None:
    zoo, path = zoo_file
    model = rnnstream.load(path, backend="fused")
    if not model.can_launch:  # masks, embeddings, layers the kernel does not step: step() only
        with pytest.raises(InputError, match="cannot launch"):
            model.launch(np.zeros(1), model.initial_state(1), pipe[1])
        return
    zoo = dataclasses.replace(zoo, batch=batch)
    assert_agrees_step_by_step(model, feed(zoo, make_inputs(zoo, 12, seed=batch)), batch, launched_step(model, pipe))


def test_launch_equals_step_exactly(rng: np.random.Generator, pipe: tuple[int, int]) -> None:
    model = rnnstream.load(rnnstream.demo.SEED_MODEL, backend="fused")
    assert model.can_launch
    state = State.adopt(rng.normal(0, 1, (300, model.state_size)).astype(np.float32), model.fingerprint)
    x = rng.normal(0, 1, (300, 4)).astype(np.float32)
    y, new = launched_step(model, pipe)(x, state)
    y_step, new_step = model.step(x, state)
    np.testing.assert_array_equal(y, y_step)
    np.testing.assert_array_equal(new.rows, new_step.rows)


def test_a_launch_on_fewer_threads_gives_the_same_step(rng: np.random.Generator, pipe: tuple[int, int]) -> None:
    """The server launches on one thread while its event loop is busy: the same numbers, bit for bit."""
    model = builtin.build("large").set_backend("fused", threads=2)  # big enough to share a step's work
    state = State.adopt(rng.normal(0, 1, (64, model.state_size)).astype(np.float32), model.fingerprint)
    x = rng.normal(0, 1, (64, 128)).astype(np.float32)
    results = []
    for threads in (None, 1, 2, 8):
        pending = model.launch(x, state, pipe[1], threads)
        wait(pipe[0], pending)
        results.append(pending.result())
    y_step, new_step = model.step(x, state)
    for y, new in results:
        np.testing.assert_array_equal(y, y_step)
        np.testing.assert_array_equal(new.rows, new_step.rows)


def test_many_launches_run_in_order_and_each_gets_its_own_results(
    rng: np.random.Generator, pipe: tuple[int, int]
) -> None:
    model = _single_layer_model(_layer("lstm", 70, 30, rng, "tanh"), 30)
    xs = [rng.normal(0, 1, (b, 30)).astype(np.float32) for b in (1, 5, 64, 200, 3) * 4]
    pendings = [model.launch(x, model.initial_state(len(x)), pipe[1]) for x in xs]
    for pending in pendings:
        wait(pipe[0], pending)
    for x, pending in zip(xs, pendings, strict=True):
        y, _ = pending.result()
        np.testing.assert_array_equal(y, model.step(x, model.initial_state(len(x)))[0])


def test_bad_input_starts_nothing(pipe: tuple[int, int]) -> None:
    model = rnnstream.load(rnnstream.demo.SEED_MODEL, backend="fused")
    with pytest.raises(InputError, match="shape"):
        model.launch(np.zeros((2, 5), np.float32), model.initial_state(2), pipe[1])
    with pytest.raises(InputError):
        model.launch(np.zeros((3, 4), np.float32), model.initial_state(2), pipe[1])
    with pytest.raises(BlockingIOError):
        os.read(pipe[0], 8)  # nothing ran, nothing was announced


def test_the_result_waits_for_the_step(rng: np.random.Generator, pipe: tuple[int, int]) -> None:
    model = _single_layer_model(_layer("lstm", 512, 512, rng, "tanh"), 512)
    pending = model.launch(rng.normal(0, 1, (512, 512)).astype(np.float32), model.initial_state(512), pipe[1])
    if not pending.done():  # ~10 ms of work: still running unless this thread was descheduled
        with pytest.raises(RuntimeError, match="still running"):
            pending.result()
    wait(pipe[0], pending)
    assert pending.result()[0].shape == (512, 512)


def test_a_dropped_launch_is_finished_before_its_arrays_are_freed(
    rng: np.random.Generator, pipe: tuple[int, int]
) -> None:
    model = _single_layer_model(_layer("lstm", 512, 512, rng, "tanh"), 512)
    for _ in range(5):  # dropped at once: freeing waits for the runner instead of pulling arrays from under it
        model.launch(rng.normal(0, 1, (512, 512)).astype(np.float32), model.initial_state(512), pipe[1])
    probe = model.launch(np.ones((1, 512), np.float32), model.initial_state(1), pipe[1])
    wait(pipe[0], probe)
    expected, _ = model.step(np.ones((1, 512), np.float32), model.initial_state(1))
    np.testing.assert_array_equal(probe.result()[0], expected)


def test_a_model_of_identity_layers_launches_and_copies(pipe: tuple[int, int]) -> None:
    model = builtin.build("builtin:identity")
    assert model.can_launch
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    y, state = launched_step(model, pipe)(x, model.initial_state(2))
    np.testing.assert_array_equal(y, x)
    assert not np.shares_memory(y, x) and state.rows.shape == (2, 0)


def test_other_backends_cannot_launch(pipe: tuple[int, int]) -> None:
    model = rnnstream.load(rnnstream.demo.SEED_MODEL, backend="numpy")
    assert not model.can_launch
    with pytest.raises(InputError, match="cannot launch on backend 'numpy'"):
        model.launch(np.zeros((1, 4), np.float32), model.initial_state(1), pipe[1])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_a_forked_child_launches_on_its_own_runner(rng: np.random.Generator, pipe: tuple[int, int]) -> None:
    model = _single_layer_model(_layer("lstm", 64, 8, rng, "tanh"), 8)
    x = rng.normal(0, 1, (16, 8)).astype(np.float32)
    y, _ = launched_step(model, pipe)(x, model.initial_state(16))  # the parent's runner is running now

    def child() -> bytes:
        child_y, _ = launched_step(model, pipe)(x, model.initial_state(16))
        return np.asarray(listed(child_y)[0], np.float32).tobytes()

    np.testing.assert_array_equal(np.frombuffer(in_forked_child(child), np.float32).reshape(y.shape), y)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_a_step_in_flight_at_fork_fails_clearly_in_the_child(rng: np.random.Generator, pipe: tuple[int, int]) -> None:
    model = _single_layer_model(_layer("lstm", 512, 512, rng, "tanh"), 512)
    x = rng.normal(0, 1, (512, 512)).astype(np.float32)
    pendings = [model.launch(x, model.initial_state(512), pipe[1]) for _ in range(3)]  # ~30 ms of work

    def child() -> bytes:  # the runner is gone here: each step either ran before the fork or says it never will
        code = 0
        for pending in pendings:
            try:
                if not pending.done():
                    code = 1
            except RuntimeError as error:
                code = code if "forked" in str(error) else 2
        del pendings[:]  # freeing them must not wait for a runner that does not exist
        return bytes([code])

    assert in_forked_child(child) == b"\x00"
    for pending in pendings:  # the parent's steps finish as usual
        wait(pipe[0], pending)
        np.testing.assert_array_equal(pending.result()[0], model.step(x, model.initial_state(512))[0])
