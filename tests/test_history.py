"""History priming in the library: ``Streams.step(..., steps=...)`` and ``step_each`` with ``StepRequest.steps``
against T single steps of the same streams, on the fused and the NumPy backends."""

from __future__ import annotations

import numpy as np
import pytest

import rnnstream
from rnnstream import InputError, StepOrderError, Streams
from rnnstream.history import cast_steps, history_inputs
from rnnstream.step_request import StepRequest
from tests.stores.small import inputs, small_model

TOLERANCE = 1e-6


def singles(streams: Streams, stream_id: str, xs: np.ndarray) -> list[list[np.ndarray]]:
    """``xs [T, 3]`` as T single steps of ``stream_id``: each step's outputs."""
    return [list(streams.step({stream_id: x})[stream_id]) for x in xs]


@pytest.mark.parametrize("backend", ["fused", "numpy"])
@pytest.mark.parametrize("T", [1, 7, 50])
def test_a_history_equals_its_single_steps(backend: str, T: int) -> None:
    model = small_model(3).set_backend(backend)
    primed, stepped = Streams(model), Streams(model)
    warm = inputs(1, 5)[0]
    for streams in (primed, stepped):  # a stream with a past: the history starts from its state
        streams.step({"a": warm[0]})
    xs = inputs(2, T)[0]
    everything = primed.step({"a": xs}, steps={"a": T}, outputs="all")["a"]
    expected = singles(stepped, "a", xs)
    for k in range(2):  # two outputs: dense (T, 2) and gru (T, 3)
        assert everything[k].shape == (T, *expected[0][k].shape)
        np.testing.assert_allclose(everything[k], np.stack([e[k] for e in expected]), atol=TOLERANCE)
    np.testing.assert_allclose(primed.states(["a"]).rows, stepped.states(["a"]).rows, atol=TOLERANCE)
    assert primed.steps_applied("a") == stepped.steps_applied("a") == T + 1
    more = inputs(4, T)[0]
    last = primed.step({"a": more}, steps={"a": T})["a"]  # the default: the last step's outputs
    expected = singles(stepped, "a", more)[-1]
    for k in range(2):
        np.testing.assert_allclose(last[k], expected[k], atol=TOLERANCE)


def test_histories_and_single_steps_in_one_call() -> None:
    model = small_model(5)
    together, apart = Streams(model), Streams(model)
    xs = inputs(6, 12, n=3)
    got = together.step({"a": xs[0], "b": xs[1, 0], "c": xs[2, :4]}, steps={"a": 12, "c": 4}, outputs="all")
    want_a, want_b, want_c = singles(apart, "a", xs[0]), singles(apart, "b", xs[1, :1]), singles(apart, "c", xs[2, :4])
    np.testing.assert_allclose(got["a"][0], np.stack([w[0] for w in want_a]), atol=TOLERANCE)
    np.testing.assert_allclose(got["b"][0], want_b[0][0], atol=TOLERANCE)  # a single step: one step's outputs
    np.testing.assert_allclose(got["c"][1], np.stack([w[1] for w in want_c]), atol=TOLERANCE)
    assert [together.steps_applied(i) for i in "abc"] == [12, 1, 4]


def test_a_resent_history_returns_its_answer_and_changes_nothing() -> None:
    streams = Streams(rnnstream.load(rnnstream.demo.SEED_MODEL))
    xs = np.random.default_rng(0).normal(0, 1, (30, 4)).astype(np.float32)
    first = streams.step({"s": xs}, {"s": 1}, steps={"s": 30}, outputs="all")["s"]
    state = streams.states(["s"]).rows.copy()
    again = streams.step({"s": xs}, {"s": 1}, steps={"s": 30}, outputs="all")["s"]
    np.testing.assert_array_equal(again, first)
    np.testing.assert_array_equal(streams.step({"s": xs}, {"s": 1}, steps={"s": 30})["s"], first[-1])
    np.testing.assert_array_equal(streams.step({"s": xs[0]}, {"s": 30})["s"], first[-1])  # its last step, alone
    np.testing.assert_array_equal(streams.states(["s"]).rows, state)
    assert streams.steps_applied("s") == 30
    with pytest.raises(StepOrderError) as refused:  # steps 29..31 overlap what was applied: not a resend
        streams.step({"s": xs[:3]}, {"s": 29}, steps={"s": 3})
    assert refused.value.expected == 31
    streams.step({"s": xs[:2]}, {"s": 31}, steps={"s": 2})  # the next steps: 31, 32
    assert streams.steps_applied("s") == 32
    with pytest.raises(StepOrderError, match="last 1 step"):  # steps 31, 32 kept their last outputs only
        streams.step({"s": xs[:4]}, {"s": 29}, steps={"s": 4}, outputs="all")


def test_start_and_end_apply_to_the_whole_request() -> None:
    model = rnnstream.load(rnnstream.demo.SEED_MODEL)
    streams, fresh = Streams(model), Streams(model)
    xs = np.random.default_rng(1).normal(0, 1, (9, 4)).astype(np.float32)
    streams.step({"s": xs[0]})
    (ys,) = streams.step_each([StepRequest("s", xs, start=True, end=True, steps=9, all_outputs=True)])
    assert isinstance(ys, np.ndarray)
    np.testing.assert_allclose(ys, fresh.step({"s": xs}, steps={"s": 9}, outputs="all")["s"], atol=TOLERANCE)
    assert "s" not in streams and streams.steps_applied("s") == 0
    numbered = StepRequest("e", xs, 1, start=True, end=True, steps=9, all_outputs=True)
    (first,) = streams.step_each([numbered])
    (retried,) = streams.step_each([numbered])  # an ended stream's last request, resent: its answer
    np.testing.assert_array_equal(retried, first)
    np.testing.assert_array_equal(first, ys)


def test_a_bad_history_fails_alone_and_changes_nothing() -> None:
    streams = Streams(small_model(0))
    xs = inputs(0, 6)[0]
    good, short, nan = xs, xs[:5], xs.copy()
    nan[3, 1] = np.nan
    results = streams.step_each([StepRequest("good", good, steps=6), StepRequest("short", short, steps=6),
                                 StepRequest("nan", nan, steps=6), StepRequest("zero", xs[:0], steps=0),
                                 StepRequest("single", xs[0])], check_finite=True)
    assert [type(r).__name__ for r in results] == ["list", "InputError", "InputError", "InputError", "list"]
    assert "expected (6, 3)" in str(results[1]) and "non-finite" in str(results[2])
    assert sorted(streams.ids()) == ["good", "single"]
    with pytest.raises(InputError, match="steps"):  # not isolating: the call fails and nothing is stepped
        streams.step({"x": xs, "y": xs[0]}, steps={"x": 5})
    assert sorted(streams.ids()) == ["good", "single"]


def test_token_ids_and_several_inputs() -> None:
    text, co2 = rnnstream.load(rnnstream.demo.TEXT_MODEL), rnnstream.load(rnnstream.demo.CO2_MODEL)
    tokens = np.random.default_rng(2).integers(0, 60, 20)
    primed, stepped = Streams(text), Streams(text)
    last = primed.step({"t": tokens}, steps={"t": 20})["t"]
    expected = [stepped.step({"t": token})["t"] for token in tokens][-1]
    np.testing.assert_allclose(last, expected, atol=1e-5)
    with pytest.raises(InputError, match="out of range"):
        primed.step({"t": np.array([1, 2, 999])}, steps={"t": 3})
    levels = np.linspace(315, 320, 8, dtype=np.float32)[:, None]
    calendar = np.random.default_rng(3).normal(0, 1, (8, 2)).astype(np.float32)
    primed, stepped = Streams(co2), Streams(co2)
    got = primed.step({"c": {"co2": levels, "calendar": calendar}}, steps={"c": 8}, outputs="all")["c"]
    expected = [stepped.step({"c": {"co2": levels[t], "calendar": calendar[t]}})["c"] for t in range(8)]
    np.testing.assert_allclose(got, np.stack(expected), atol=1e-4)


def test_steps_and_outputs_are_checked() -> None:
    streams = Streams(rnnstream.load(rnnstream.demo.SEED_MODEL))
    x = np.zeros((3, 4), np.float32)
    with pytest.raises(InputError, match="not stepped in this call"):
        streams.step({"a": x}, steps={"b": 3})
    with pytest.raises(InputError, match="integers from 1"):
        streams.step({"a": x}, steps={"a": 0})
    with pytest.raises(InputError, match='"last" or "all"'):
        streams.step({"a": x}, steps={"a": 3}, outputs="every")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="steps is the number"):
        history_inputs(streams.model, StepRequest("a", x, steps=True))  # type: ignore[arg-type]
    with pytest.raises(InputError, match="real numbers"):
        cast_steps(streams.model.inputs[0], np.array([["a"] * 4] * 3), 3)
