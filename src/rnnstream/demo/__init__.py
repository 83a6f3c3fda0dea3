"""Bundled demonstration models and data.

- ``SEED_MODEL``: the model of the seed blog post, LSTM(100) → LSTM(200) → Dense(1, sigmoid) over 4
  features, with fixed random weights (``scripts/make_seed_model.py`` writes it with Keras).
- ``TEXT_MODEL`` and :func:`text_vocabulary`: a character-level Shakespeare model for
  :func:`rnnstream.generate`.
- ``CO2_MODEL``, :func:`co2_series` and :func:`forecast_co2`: a weekly CO2 forecaster for
  :func:`rnnstream.forecast`, and its series.

``scripts/train_demo_models.py`` trains the last two; ``DATA.md`` gives their data's source and licence.

>>> SEED_MODEL.name, TEXT_MODEL.name, CO2_MODEL.name
('seed_lstm.keras', 'shakespeare_char.keras', 'co2_forecaster.keras')
"""

from pathlib import Path

from rnnstream.demo.co2 import CO2_MODEL, Series, co2_calendar, co2_series, forecast_co2, forecast_dates
from rnnstream.demo.text import TEXT_MODEL, text_vocabulary

DIRECTORY = Path(__file__).parent
SEED_MODEL = DIRECTORY / "seed_lstm.keras"

__all__ = [
    "CO2_MODEL",
    "DIRECTORY",
    "SEED_MODEL",
    "TEXT_MODEL",
    "Series",
    "co2_calendar",
    "co2_series",
    "forecast_co2",
    "forecast_dates",
    "text_vocabulary",
]
