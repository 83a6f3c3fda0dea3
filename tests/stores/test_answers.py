"""Every store keeps the answer of a history request that asked for every step's outputs (``(T, O)`` as its
stored output), so that its resend is answered in full; a later write keeps one row again."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from rnnstream import StepOrderError, StreamModel, Streams
from rnnstream.step_request import StepRequest
from tests.stores.small import inputs

MakeStreams = Callable[..., Streams]


def test_a_resent_history_is_answered_in_full(make_streams: MakeStreams, model: StreamModel) -> None:
    streams, reference = make_streams(), Streams(model)
    xs = inputs(21, 40)[0]
    first = streams.step({"h": xs}, {"h": 1}, steps={"h": 40}, outputs="all")["h"]
    expected = [reference.step({"h": x})["h"] for x in xs]
    for k in range(2):
        np.testing.assert_allclose(first[k], np.stack([e[k] for e in expected]), atol=1e-6)
    records = streams.store.load(["h"])
    assert records.answers[0].shape == (40, records.outputs.shape[1])
    np.testing.assert_array_equal(records.answers[0][-1], records.outputs[0])
    again = streams.step({"h": xs}, {"h": 1}, steps={"h": 40}, outputs="all")["h"]
    for k in range(2):
        np.testing.assert_array_equal(again[k], first[k])
    assert streams.steps_applied("h") == 40
    streams.step({"h": xs[0]}, {"h": 41})  # a single step: the stored answer is one row again
    assert streams.store.load(["h"]).answers == {}
    with pytest.raises(StepOrderError):
        streams.step({"h": xs[:2]}, {"h": 40}, steps={"h": 2}, outputs="all")


def test_an_ended_history_keeps_its_answer(make_streams: MakeStreams) -> None:
    streams = make_streams()
    xs = inputs(22, 6)[0]
    request = StepRequest("e", xs, 1, start=True, end=True, steps=6, all_outputs=True)
    (first,) = streams.step_each([request])
    assert "e" not in streams
    (again,) = streams.step_each([request])
    assert isinstance(first, list) and isinstance(again, list)
    for k in range(2):
        np.testing.assert_array_equal(again[k], first[k])
    (last,) = streams.step_each([StepRequest("e", xs, 1, start=True, end=True, steps=6)])  # asking for the last
    assert isinstance(last, list)
    np.testing.assert_array_equal(last[0], first[0][-1])


def test_forgotten_streams_drop_their_answers(make_streams: MakeStreams) -> None:
    streams = make_streams()
    xs = inputs(23, 5)[0]
    streams.step({"f": xs}, steps={"f": 5}, outputs="all")
    streams.close("f")
    streams.step({"f": xs[0]})
    assert streams.store.load(["f"]).answers == {} and streams.steps_applied("f") == 1
    streams.step({"g": xs}, steps={"g": 5}, outputs="all")
    streams.reset("g")
    assert streams.store.load(["g"]).answers == {}
