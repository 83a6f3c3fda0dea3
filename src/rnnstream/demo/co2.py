"""The bundled CO2 series and forecaster: weekly atmospheric CO2 at Mauna Loa, 1958-03-29 … 2001-12-29.

The forecaster (``CO2_MODEL``) takes two inputs per week: ``co2`` (ppm) and ``calendar`` (sin and cos of
the week's day of the year, :func:`co2_calendar`); its output is the next week's CO2 in ppm. Feeding that
output back into ``co2``, with the calendar of each future week, rolls a forecast forward
(:func:`forecast_co2`). The series doubles as the replay data of a live chart. Source and licence:
``DATA.md`` beside this file.

>>> series = co2_series()
>>> len(series.values), str(series.dates[0]), round(float(series.values[0]), 2)
(2284, '1958-03-29', 316.1)
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from rnnstream.errors import InputError
from rnnstream.types import Array, FloatArray

if TYPE_CHECKING:
    from rnnstream.generation.forecast import Forecast
    from rnnstream.model import StreamModel

DIRECTORY = Path(__file__).parent
CO2_MODEL = DIRECTORY / "co2_forecaster.keras"
CO2_SERIES = DIRECTORY / "co2_weekly.csv"
WEEK = np.timedelta64(7, "D")


@dataclass(frozen=True)
class Series:
    """A weekly series: ``dates`` (datetime64[D]), ``values`` (float32) and which weeks were interpolated."""

    dates: Array
    values: FloatArray
    interpolated: Array

    def index(self, date: str | np.datetime64) -> int:
        """The position of the first week on or after ``date`` (``"1998-01-01"`` → the first week of 1998)."""
        when = np.array(date, dtype="datetime64[D]")
        if not self.dates[0] <= when <= self.dates[-1] + WEEK:
            raise InputError(f"date {date} is outside the series ({self.dates[0]} … {self.dates[-1]})")
        return int(np.searchsorted(self.dates, when))


def co2_series() -> Series:
    """The bundled weekly CO2 series (2,284 weeks; 59 missing weeks filled by linear interpolation)."""
    with CO2_SERIES.open(newline="") as f:
        rows = list(csv.DictReader(f))
    return Series(
        dates=np.array([r["date"] for r in rows], "datetime64[D]"),
        values=np.array([float(r["co2_ppm"]) for r in rows], np.float32),
        interpolated=np.array([r["interpolated"] == "1" for r in rows]),
    )


def co2_calendar(dates: Array) -> FloatArray:
    """``[T, 2]``: sin and cos of 2π·(day of the year − 1)/365.25 — the forecaster's ``calendar`` input.

    >>> co2_calendar(np.array(["2001-01-01"], "datetime64[D]")).round(6).tolist()
    [[0.0, 1.0]]
    """
    days = np.asarray(dates, "datetime64[D]")
    day_of_year = (days - days.astype("datetime64[Y]")).astype(np.float64)  # 0 on 1 January
    phase = 2 * np.pi * day_of_year / 365.25
    return np.stack([np.sin(phase), np.cos(phase)], axis=-1).astype(np.float32)


def forecast_dates(series: Series, start: int, horizon: int) -> Array:
    """The weeks forecast from position ``start``: ``dates[start - 1]`` + 1, 2, … ``horizon`` weeks."""
    dates: Array = series.dates[start - 1] + WEEK * np.arange(1, horizon + 1)
    return dates


def forecast_co2(
    model: StreamModel,
    series: Series | None = None,
    *,
    start: int | None = None,
    horizon: int = 104,
    noise: float | str | None = None,
    paths: int | None = None,
    seed: int | None = None,
) -> Forecast:
    """Forecast ``horizon`` weeks of CO2 after the weeks before position ``start`` (default: the whole series).

    >>> import rnnstream
    >>> model = rnnstream.load(CO2_MODEL)
    >>> result = forecast_co2(model, horizon=52)
    >>> result.point.shape, bool(360 < result.point[-1, 0] < 385)
    ((52, 1), True)
    """
    from rnnstream.generation.forecast import forecast

    series = series if series is not None else co2_series()
    start = len(series.values) if start is None else start
    if isinstance(start, bool) or not isinstance(start, int) or not 1 <= start <= len(series.values):
        raise InputError(f"start must be a position 1..{len(series.values)} in the series, got {start!r}")
    history = {"co2": series.values[:start, None], "calendar": co2_calendar(series.dates[:start])}
    future = co2_calendar(forecast_dates(series, start, horizon))
    return forecast(model, history, horizon, feedback={"co2": [0]}, exogenous={"calendar": future},
                    noise=noise, paths=paths, seed=seed)
