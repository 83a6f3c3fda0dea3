"""A CSV of steps (rnnstream.server.csv_steps): rows split among a model's inputs in order; any text a client
sends is either steps or a ProtocolError / LimitError naming the row, never another error."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rnnstream
from rnnstream.server.csv_steps import csv_steps
from rnnstream.server.refusals import LimitError, ProtocolError

CO2 = rnnstream.load(rnnstream.demo.CO2_MODEL)  # inputs co2 (1) and calendar (2)
TEXT = rnnstream.load(rnnstream.demo.TEXT_MODEL)  # token ids


def test_rows_split_among_the_inputs_in_order() -> None:
    steps = csv_steps(CO2, "co2,sin,cos\n316.1,1.0,0.07\n\n316.4, 0.99, 0.19\n", max_rows=5)
    assert len(steps) == 2
    assert steps[1]["co2"].tolist() == pytest.approx([316.4]) and steps[1]["calendar"].dtype == np.float32
    assert steps[0]["calendar"].tolist() == pytest.approx([1.0, 0.07])


def test_token_ids_are_integers_within_the_vocabulary() -> None:
    (first, second) = csv_steps(TEXT, "3\n7\n", max_rows=5)
    assert first.dtype == np.int64 and second.tolist() == 7
    with pytest.raises(ProtocolError, match=r"CSV row 1, columns 1-1 \(input .*token ids are integers"):
        csv_steps(TEXT, "2.5\n", max_rows=5)


def test_rows_past_the_limit_are_refused_before_any_is_stepped() -> None:
    with pytest.raises(LimitError) as refused:
        csv_steps(CO2, "1,2,3\n" * 6, max_rows=5)
    assert (refused.value.name, refused.value.value, refused.value.limit) == ("max_csv_rows", 6, 5)


cells = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr), st.integers().map(str),
                  st.text(max_size=6))


@settings(max_examples=300, deadline=None)
@given(rows=st.lists(st.lists(cells, min_size=0, max_size=5), max_size=8), model=st.sampled_from([CO2, TEXT]))
def test_any_csv_is_steps_or_a_named_refusal(rows: list[list[str]], model: rnnstream.StreamModel) -> None:
    text = "\n".join(",".join(row) for row in rows)
    try:
        steps = csv_steps(model, text, max_rows=6)
    except (ProtocolError, LimitError) as error:
        assert "CSV" in str(error) or "max_csv_rows" in str(error)
        return
    assert 1 <= len(steps) <= 6
