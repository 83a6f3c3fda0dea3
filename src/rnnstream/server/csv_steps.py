"""A CSV of steps: one row per step, the model's inputs' values flattened in the order of its inputs.

A first row that is not all numbers is a header and is skipped; empty lines are skipped. Each row must hold
exactly the model's input values per step (the sum of its inputs' sizes); token ids are integers.

>>> import rnnstream
>>> seed = rnnstream.load(rnnstream.demo.SEED_MODEL)  # one input of 4 values
>>> rows = csv_steps(seed, "a,b,c,d\\n1,2,3,4\\n5,6,7,8\\n", max_rows=10)
>>> len(rows), rows[1].tolist()
(2, [5.0, 6.0, 7.0, 8.0])
>>> csv_steps(seed, "1,2,3\\n", max_rows=10)
Traceback (most recent call last):
rnnstream.server.refusals.ProtocolError: CSV row 1 has 3 values; model inputs take 4 per step: input (4)
"""

from __future__ import annotations

import csv
import io
import math
from typing import Any

import numpy as np

from rnnstream.batch_inputs import cast_input
from rnnstream.errors import InputError
from rnnstream.model import StreamModel
from rnnstream.server import limits
from rnnstream.server.refusals import ProtocolError


def csv_steps(model: StreamModel, text: str, *, max_rows: int) -> list[Any]:
    """Each row of ``text`` as one step's inputs (an array for a one-input model, else a dict by name);
    ProtocolError names the row and column that is wrong, LimitError says when there are over ``max_rows``."""
    try:
        rows = [row for row in csv.reader(io.StringIO(text, newline="")) if any(cell.strip() for cell in row)]
    except csv.Error as error:
        raise ProtocolError(f"the CSV cannot be read ({error}); one row per step, comma-separated") from None
    if rows and not all(_number(cell) for cell in rows[0]):
        rows = rows[1:]  # a header
    if not rows:
        raise ProtocolError("the CSV holds no rows of numbers: one row per step, the model's input values")
    limits.check("max_csv_rows", len(rows), max_rows)
    return [_step(model, row, k + 1) for k, row in enumerate(rows)]


def _number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _step(model: StreamModel, row: list[str], number: int) -> Any:
    sizes = [math.prod(spec.spec.shape) for spec in model.inputs]
    if len(row) != sum(sizes):
        described = ", ".join(f"{spec.name} ({size})" for spec, size in zip(model.inputs, sizes, strict=True))
        raise ProtocolError(f"CSV row {number} has {len(row)} values; model inputs take {sum(sizes)} per step: "
                            f"{described}")
    step: dict[str, Any] = {}
    at = 0
    for spec, size in zip(model.inputs, sizes, strict=True):
        cells = row[at : at + size]
        try:
            numbers = [int(c) if spec.spec.dtype == "int64" else float(c) for c in cells]
            step[spec.name] = cast_input(spec, np.array(numbers).reshape(spec.spec.shape))
        except (ValueError, InputError) as error:
            raise ProtocolError(f"CSV row {number}, columns {at + 1}-{at + size} (input {spec.name!r}): {error}; "
                                f"{'token ids are integers' if spec.spec.dtype == 'int64' else 'numbers'} "
                                "expected") from None
        at += size
    return step[model.inputs[0].name] if len(model.inputs) == 1 else step
