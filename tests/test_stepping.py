"""One batched step of many streams: the steady-state shortcut agrees with the per-request decisions."""

from __future__ import annotations

import numpy as np
import pytest

import rnnstream
from rnnstream.batch_inputs import stack_inputs
from rnnstream.graph import GraphBuilder
from rnnstream.layers.dense import Dense
from rnnstream.layers.layer import TensorSpec
from rnnstream.step_request import StepRequest
from tests.stores.small import inputs, small_model


def one_input_model(shape: tuple[int, ...]) -> rnnstream.StreamModel:
    g = GraphBuilder()
    x = g.add_input("x", TensorSpec(shape))
    dense = Dense("dense", W=np.ones((shape[-1], 2), np.float32), b=np.zeros(2, np.float32), activation="linear")
    (y,) = g.add_node("dense", dense, [x])
    return rnnstream.StreamModel(g.build([y], ["y"]), name="one-input")


@pytest.mark.parametrize("shape", [(3,), (2, 3)])
def test_stacked_inputs_are_the_requests_values_in_order(shape: tuple[int, ...]) -> None:
    model = one_input_model(shape)
    values = np.random.default_rng(0).normal(size=(5, *shape)).astype(np.float32)
    requests = [StepRequest(f"s{k}", values[k]) for k in range(5)]
    (batch,), errors = stack_inputs(model, requests)
    assert not errors
    assert batch.shape == (5, *shape)
    np.testing.assert_array_equal(batch, values)


def test_a_wrong_shape_is_set_aside_and_the_rest_stacked() -> None:
    model = one_input_model((3,))
    good = np.arange(3, dtype=np.float32)
    requests = [StepRequest("a", good), StepRequest("b", np.zeros(4)), StepRequest("c", good)]
    (batch,), errors = stack_inputs(model, requests)
    assert list(errors) == [1] and "expected (3,)" in str(errors[1])
    np.testing.assert_array_equal(batch, [good, good])


def test_plain_steps_equal_numbered_steps() -> None:
    """Plain steps of known streams take the shortcut; numbered steps are decided one by one: same outputs."""
    model = small_model()
    xs = inputs(1, 5, n=4)  # (streams, T, 3)
    plain, numbered = rnnstream.Streams(model), rnnstream.Streams(model)
    for t in range(5):
        first = [StepRequest(f"s{k}", xs[k, t], start=t == 0) for k in range(4)]
        counted = [StepRequest(f"s{k}", xs[k, t], step_number=t + 1) for k in range(4)]
        for a, b in zip(plain.step_each(first), numbered.step_each(counted), strict=True):
            assert not isinstance(a, Exception) and not isinstance(b, Exception)
            for ya, yb in zip(a, b, strict=True):
                np.testing.assert_array_equal(ya, yb)
    assert plain.steps_applied("s3") == numbered.steps_applied("s3") == 5


def test_a_batch_mixing_new_known_and_ending_streams() -> None:
    model = small_model()
    xs = inputs(2, 3, n=3)
    streams = rnnstream.Streams(model)
    streams.step_each([StepRequest("old", xs[0, 0])])
    results = streams.step_each([
        StepRequest("old", xs[0, 1]),
        StepRequest("new", xs[1, 0], must_exist=True),  # unknown and not started: refused
        StepRequest("fresh", xs[2, 0], start=True, end=True),  # started and ended in one step
    ])
    assert not isinstance(results[0], Exception) and not isinstance(results[2], Exception)
    assert isinstance(results[1], rnnstream.StreamNotFoundError)
    assert streams.ids() == ["old"] and streams.steps_applied("old") == 2
    # Plain steps only, one of an unknown stream: no shortcut for that batch either.
    known, unknown = streams.step_each([StepRequest("old", xs[0, 2]), StepRequest("gone", xs[1, 1], must_exist=True)])
    assert not isinstance(known, Exception) and isinstance(unknown, rnnstream.StreamNotFoundError)
    assert streams.ids() == ["old"] and streams.steps_applied("old") == 3


def test_an_ending_step_among_plain_steps_forgets_its_stream() -> None:
    model = small_model()
    xs = inputs(3, 2, n=3)
    streams = rnnstream.Streams(model)
    streams.step_each([StepRequest(f"s{k}", xs[k, 0]) for k in range(3)])
    results = streams.step_each([StepRequest(f"s{k}", xs[k, 1], end=k == 1) for k in range(3)])
    assert not any(isinstance(r, Exception) for r in results)
    assert streams.ids() == ["s0", "s2"] and streams.steps_applied("s2") == 2
