"""State: rows per stream, read-only, selectable, concatenable, serialisable."""

from __future__ import annotations

import numpy as np
import pytest

from rnnstream import State, StateError

FP = "0f" * 32


def make(rows: list[list[float]], fingerprint: str = FP) -> State:
    return State(np.array(rows, np.float32), fingerprint)


def test_rows_are_read_only_and_copied() -> None:
    source = np.zeros((2, 3), np.float32)
    state = State(source, FP)
    source[0, 0] = 9.0
    assert state.rows[0, 0] == 0.0
    with pytest.raises(ValueError, match="read-only"):
        state.rows[0, 0] = 1.0


def test_select_and_concat() -> None:
    state = make([[0, 0], [1, 1], [2, 2]])
    assert state.select(1).rows.tolist() == [[1, 1]]
    assert state.select([2, 0]).rows.tolist() == [[2, 2], [0, 0]]
    assert state[0:2].batch_size == 2
    joined = State.concat([state.select([2]), state.select([0])])
    assert joined.rows.tolist() == [[2, 2], [0, 0]] and len(joined) == 2


def test_concat_refuses_mixed_models() -> None:
    with pytest.raises(StateError, match="different models"):
        State.concat([make([[0.0]]), make([[0.0]], "aa" * 32)])
    with pytest.raises(StateError, match="at least one"):
        State.concat([])


def test_bytes_round_trip_and_header() -> None:
    state = make([[1.5, -2.0], [3.0, 4.0]])
    data = state.to_bytes()
    assert data[:4] == b"RNST" and len(data) == 48 + 16
    assert State.from_bytes(data) == state


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"RNST", "too short"),
        (b"XXXX" + bytes(60), "not an rnnstream state"),
        (b"RNST\x09" + bytes(59), "version 9"),
    ],
)
def test_malformed_bytes(data: bytes, message: str) -> None:
    with pytest.raises(StateError, match=message):
        State.from_bytes(data)


def test_length_must_match_header() -> None:
    data = make([[1.0, 2.0]]).to_bytes()
    with pytest.raises(StateError, match="batch 1 × size 2"):
        State.from_bytes(data + b"\0\0\0\0")


def test_rows_must_be_2d_float32() -> None:
    with pytest.raises(StateError, match="2-D float32"):
        State(np.zeros(3, np.float32), FP)
