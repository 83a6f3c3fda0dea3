"""Bundled demonstration models.

``SEED_MODEL`` is the model of the seed blog post: LSTM(100) → LSTM(200) → Dense(1, sigmoid) over
4 features, with fixed random weights (``scripts/make_seed_model.py`` writes it with Keras).

>>> SEED_MODEL.name
'seed_lstm.keras'
"""

from pathlib import Path

DIRECTORY = Path(__file__).parent
SEED_MODEL = DIRECTORY / "seed_lstm.keras"

__all__ = ["DIRECTORY", "SEED_MODEL"]
