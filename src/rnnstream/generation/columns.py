"""CSV columns by name ↔ a model's inputs: how ``rnnstream forecast`` reads ``--history``, ``--feedback`` and
``--exogenous``.

A history CSV has one row per step and one column per input feature: the model's inputs' features side by
side, in the order of its inputs (for inputs ``co2 (1)`` and ``calendar (2)``: three columns). An optional
header row names the columns; without one they are named by their index (``0``, ``1``, ...). ``--feedback
co2`` feeds output column 0 into column ``co2``; ``--feedback a b`` feeds outputs 0 and 1 into ``a`` and
``b``; ``--feedback b=1`` says which output. The columns not fed back are exogenous: their future values
come from a second CSV (``--exogenous``) whose header names them (any order), one row per forecast time.

>>> import rnnstream
>>> model = rnnstream.load(rnnstream.demo.CO2_MODEL)          # inputs co2 (1) and calendar (2)
>>> layout = Layout(model, ["ppm", "sin", "cos"])
>>> layout.feedback(feedback_pairs(["ppm"], layout.names))
{'co2': {0: 0}}
>>> layout.exogenous_names({0: 0})
['sin', 'cos']
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rnnstream.errors import InputError
from rnnstream.model import StreamModel
from rnnstream.types import FloatArray


@dataclass(frozen=True)
class Table:
    """A CSV of numbers: ``names`` of its columns (from its header, else ``"0"``, ``"1"``, ...) and its
    ``values [rows, columns]``."""

    names: list[str]
    values: FloatArray
    header: bool


def read_table(path: Path, flag: str) -> Table:
    """The CSV at ``path`` (``flag`` names the option it came from, for errors): rows of numbers separated
    by commas, all of one length, and optionally a header row of column names first."""
    try:
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except OSError as error:
        raise InputError(f"cannot read {flag} {path}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise InputError(f"{flag} {path} is not a text file; expected CSV: numbers separated by commas") from None
    header: list[str] | None = None
    rows: list[list[float]] = []
    for n, line in enumerate(lines):
        cells = [c.strip() for c in line.split(",")]
        try:
            rows.append([float(c) for c in cells])
        except ValueError:
            if n == 0:
                header = cells
                continue
            raise InputError(f"{flag} {path} line {n + 1}: {line!r} is not numbers separated by commas") from None
    width = len(header) if header is not None else len(rows[0]) if rows else 0
    if not rows or any(len(r) != width for r in rows):
        raise InputError(f"{flag} {path}: expected rows of equal length (and as many names in its header), one row "
                         "per step, one column per input feature")
    if header is not None and len(set(header)) != len(header):
        raise InputError(f"{flag} {path}: its header names a column twice: {header}")
    names = header if header is not None else [str(c) for c in range(width)]
    return Table(names, np.array(rows, np.float32), header is not None)


def feedback_pairs(feedback: list[str], names: list[str]) -> dict[int, int]:
    """``--feedback`` entries ``COLUMN`` or ``COLUMN=OUTPUT`` as ``{column index: output column}``; a bare
    ``COLUMN`` takes the output column of its position in the list.

    >>> feedback_pairs(["b", "a"], ["a", "b", "c"]), feedback_pairs(["c=0"], ["a", "b", "c"])
    ({1: 0, 0: 1}, {2: 0})
    """
    pairs: dict[int, int] = {}
    for position, entry in enumerate(feedback):
        column, _, output = entry.rpartition("=") if "=" in entry else (entry, "", str(position))
        index = column_index(column, names, "--feedback")
        if not output.isdigit():
            raise InputError(f"--feedback {entry!r}: after '=' comes an output column's index (0, 1, ...)")
        if index in pairs:
            raise InputError(f"--feedback feeds column {column!r} twice")
        pairs[index] = int(output)
    return pairs


def column_index(column: str, names: list[str], flag: str) -> int:
    """The index of ``column``: a name of ``names``, else its index."""
    if column in names:
        return names.index(column)
    if column.isdigit() and int(column) < len(names):
        return int(column)
    raise InputError(f"{flag}: no column {column!r}; the history's columns are {names}")


def check_real_valued(model: StreamModel) -> None:
    """Refuse a model whose inputs are not rows of real values ``(B, F)``: a CSV cannot hold them."""
    for spec in model.inputs:
        if spec.spec.dtype != "float32" or len(spec.spec.shape) != 1:
            raise InputError(f"forecast feeds real-valued inputs (B, F) back; input {spec.name!r} of model "
                             f"{model.name!r} is {spec.spec.describe()} (a token model generates: rnnstream generate)")


class Layout:
    """Where each column of a history CSV goes: model input and column of that input, in input order."""

    def __init__(self, model: StreamModel, names: list[str]) -> None:
        check_real_valued(model)
        widths = [(s.name, s.spec.shape[0]) for s in model.inputs]
        if sum(w for _, w in widths) != len(names):
            described = " + ".join(f"{name} ({w})" for name, w in widths)
            raise InputError(f"the history has {len(names)} columns {names}; model {model.name!r} takes {described} "
                             "features per step: one column each, its inputs side by side in this order")
        self.names = names
        self.places = [(name, j) for name, w in widths for j in range(w)]  # column → (input, its column)
        self.inputs = [name for name, _ in widths]

    def split(self, values: FloatArray) -> dict[str, FloatArray]:
        """``values [T, columns]`` as ``{input: [T, its columns]}``."""
        return {name: values[:, [c for c, (n, _) in enumerate(self.places) if n == name]] for name in self.inputs}

    def feedback(self, pairs: dict[int, int]) -> dict[str, dict[int, int]]:
        """``{column: output column}`` as the API's ``{input: {its column: output column}}``."""
        by_input: dict[str, dict[int, int]] = {}
        for column, output in pairs.items():
            name, j = self.places[column]
            by_input.setdefault(name, {})[j] = output
        return by_input

    def exogenous_names(self, pairs: dict[int, int]) -> list[str]:
        """The names of the columns not fed back, in order."""
        return [n for c, n in enumerate(self.names) if c not in pairs]

    def exogenous(self, table: Table, pairs: dict[int, int], horizon: int) -> dict[str, FloatArray]:
        """The future values of the columns not fed back, from ``--exogenous`` ``table`` (named by its
        header, any order; without one, in the history's order): ``{input: [H or H - 1, its columns]}``."""
        wanted = self.exogenous_names(pairs)
        given = table.names if table.header else wanted[: len(table.names)]
        if sorted(given) != sorted(wanted):
            raise InputError(f"--exogenous gives columns {given}; the columns not fed back are {wanted}: give "
                             "those (a header row names them)")
        if len(table.values) < horizon - 1:
            raise InputError(f"--exogenous has {len(table.values)} rows; a forecast of {horizon} steps needs "
                             f"{horizon - 1} (one per forecast time; the last is never fed)")
        rows = table.values[:horizon, [given.index(n) for n in wanted]]  # (H, columns not fed), history order
        futures = {c: rows[:, k] for k, c in enumerate(c for c in range(len(self.names)) if c not in pairs)}
        return {name: np.stack([futures[c] for c, (n, _) in enumerate(self.places) if n == name and c in futures],
                               axis=1)  # (rows, its columns not fed)
                for name in self.inputs if any(self.places[c][0] == name for c in futures)}
