"""Each request's inputs are cast and checked alone: one of another kind never spoils its batch-mates."""

from __future__ import annotations

import numpy as np
import pytest

import rnnstream
from rnnstream.batch_inputs import stack_inputs
from rnnstream.step_request import StepRequest

TEXT = rnnstream.load(rnnstream.demo.TEXT_MODEL)
SEED = rnnstream.load(rnnstream.demo.SEED_MODEL)


def test_a_float_among_token_ids_is_set_aside_and_the_batch_stays_int64() -> None:
    requests = [StepRequest("a", np.int64(3)), StepRequest("b", np.float32(1.5)), StepRequest("c", np.int32(7)),
                StepRequest("d", 5)]
    (batch,), errors = stack_inputs(TEXT, requests)
    assert batch.dtype == np.int64 and batch.tolist() == [3, 7, 5]
    assert list(errors) == [1] and "integer token ids" in str(errors[1])


def test_token_ids_out_of_range_fail_alone() -> None:
    (batch,), errors = stack_inputs(TEXT, [StepRequest("a", np.int64(75)), StepRequest("b", np.int64(76)),
                                           StepRequest("c", np.int64(-1)), StepRequest("d", np.uint64(2**63))])
    assert batch.tolist() == [75] and sorted(errors) == [1, 2, 3]
    assert "0..75" in str(errors[1]) and "token id -1" in str(errors[2]) and "out of range" in str(errors[3])


@pytest.mark.parametrize("value", [[np.nan, 0, 0, 0], [0, np.inf, 0, 0], [1e39, 0, 0, 0]])
def test_non_finite_values_fail_alone_when_checked(value: list[float]) -> None:
    good = np.ones(4, np.float32)
    requests = [StepRequest("a", good), StepRequest("b", np.array(value)), StepRequest("c", good)]
    (batch,), errors = stack_inputs(SEED, requests, check_finite=True)
    assert batch.shape == (2, 4) and list(errors) == [1] and "non-finite" in str(errors[1])
    (unchecked,), none = stack_inputs(SEED, requests)
    assert unchecked.shape == (3, 4) and not none


@pytest.mark.parametrize("value", [["a", "b", "c", "d"], [[1, 2], [3]], [True, False, True, True], None])
def test_values_of_another_kind_fail_alone(value: object) -> None:
    good = np.ones(4, np.float32)
    (batch,), errors = stack_inputs(SEED, [StepRequest("a", good), StepRequest("b", value)])
    assert batch.shape == (1, 4) and batch.dtype == np.float32 and list(errors) == [1]
    assert "stream 'b'" in str(errors[1])


def test_step_each_steps_the_good_requests_of_a_mixed_batch() -> None:
    streams = rnnstream.Streams(TEXT)
    results = streams.step_each([StepRequest("a", np.int64(3)), StepRequest("b", np.float32(1.5))])
    ys, _ = TEXT.step(np.int64([3]), TEXT.initial_state(1))
    np.testing.assert_array_equal(results[0], np.asarray(ys)[0])
    assert isinstance(results[1], rnnstream.InputError) and "b" not in streams
