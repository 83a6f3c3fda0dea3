"""Frames and bodies as the server reads them: the client's encoding checked with the server's own decoders."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rnnstream.client.wire import Call, ModelInfo, as_inputs, encode_frame, frame_outputs, infer_request
from rnnstream.errors import InputError
from rnnstream.server.schema import FrameSteps, InferenceRequest, decode

TWO = ModelInfo.from_metadata({
    "name": "two",
    "inputs": [{"name": "ids", "datatype": "INT64", "shape": [-1]},
               {"name": "x", "datatype": "FP32", "shape": [-1, 3]}],
    "outputs": [{"name": "a", "datatype": "FP32", "shape": [-1, 2]},
                {"name": "b", "datatype": "FP32", "shape": [-1, 1]}],
})
ids = st.one_of(st.text(min_size=1, max_size=20), st.integers(0, 2**63).map(str))
floats = st.floats(-1e6, 1e6, width=32)


@given(st.lists(st.tuples(ids, st.integers(1, 2**40), st.booleans(), st.integers(0, 2**62),
                          st.lists(floats, min_size=3, max_size=3)), min_size=1, max_size=20))
def test_a_frame_decodes_with_the_servers_schema(requests: list[tuple[str, int, bool, int, list[float]]]) -> None:
    calls = [(k, Call(TWO, sid, step, as_inputs(TWO, {"ids": token, "x": x}, None), start=step == 1, end=end))
             for k, (sid, step, end, token, x) in enumerate(requests)]
    frame = encode_frame("two", calls)
    (length,) = struct.unpack_from("<I", frame)
    header = decode(FrameSteps, frame[4 : 4 + length])
    assert header.model == "two"
    for (k, call), step in zip(calls, header.requests, strict=True):
        assert (step.id, step.sequence_id, step.sequence_step, step.sequence_start, step.sequence_end) == \
            (k, call.sequence_id, call.step, call.start, call.end)
    record = np.dtype([("ids", "<i8"), ("x", "<f4", (3,))])  # the server's record: inputs in model order
    values = np.frombuffer(frame[4 + length :], record)
    assert values["ids"].tolist() == [r[3] for r in requests]
    np.testing.assert_array_equal(values["x"], np.array([r[4] for r in requests], np.float32))


@given(st.integers(1, 60), st.booleans())
def test_an_infer_body_has_a_time_axis_only_when_primed(T: int, primed: bool) -> None:
    xs = as_inputs(TWO, [np.arange(T), np.ones((T, 3))], T)
    call = Call(TWO, "s", 4, xs if primed else [x[:1] for x in xs], primed=primed)
    content, headers = infer_request(call)
    length = int(headers["Inference-Header-Content-Length"])
    body = decode(InferenceRequest, content[:length])
    assert [i.shape for i in body.inputs] == ([[1, T], [1, T, 3]] if primed else [[1], [1, 3]])
    sizes = [(i.parameters.binary_data_size if i.parameters else None) or 0 for i in body.inputs]
    assert sizes == [T * 8 if primed else 8, T * 12 if primed else 12] and len(content) == length + sum(sizes)
    assert body.parameters is not None and body.parameters.sequence_step == 4


def test_inputs_of_the_wrong_shape_or_names_are_refused_before_sending() -> None:
    with pytest.raises(InputError, match=r"'x' of 'two': one step is shape \[3\], got \[4\]"):
        as_inputs(TWO, {"ids": 1, "x": np.zeros(4)}, None)
    with pytest.raises(InputError, match=r"takes inputs \['ids', 'x'\]"):
        as_inputs(TWO, {"ids": 1}, None)
    with pytest.raises(InputError, match="pass a list or a dict"):
        as_inputs(TWO, np.zeros(3), None)


def test_answered_outputs_are_split_by_request_and_refused_ones_skipped() -> None:
    values = np.arange(6, dtype=np.float32)
    found = frame_outputs([{"id": 1}, {"id": 2, "error": "no", "code": 400}, {"id": 3}], values, 3)
    assert [None if f is None else f.tolist() for f in found] == [[0, 1, 2], None, [3, 4, 5]]
    with pytest.raises(ValueError, match="carries 6 values"):
        frame_outputs([{"id": 1}], values, 3)
