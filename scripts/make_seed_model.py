"""Write the bundled seed model, src/rnnstream/demo/seed_lstm.keras, with Keras.

The model of the seed blog post: Input(None, 4) → LSTM(100, return_sequences) → LSTM(200) →
Dense(1, sigmoid). Keras' own initialisers with a fixed seed, plus random biases so that every
weight is non-trivial. Run: .venv/bin/python scripts/make_seed_model.py
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np

OUT = Path(__file__).resolve().parents[1] / "src" / "rnnstream" / "demo" / "seed_lstm.keras"


def main() -> None:
    keras.utils.set_random_seed(0)
    layers = keras.layers
    inputs = layers.Input((None, 4), name="input")
    h1 = layers.LSTM(100, return_sequences=True, name="lstm1")(inputs)
    h2 = layers.LSTM(200, name="lstm2")(h1)
    outputs = layers.Dense(1, activation="sigmoid", name="output")(h2)
    model = keras.Model(inputs, outputs, name="seed_lstm")
    rng = np.random.default_rng(0)
    for layer in model.layers:
        weights = layer.get_weights()
        if weights:
            weights[-1] = rng.normal(0.0, 0.1, weights[-1].shape).astype(np.float32)  # the bias
            layer.set_weights(weights)
    model.save(OUT)
    print(f"wrote {OUT} ({OUT.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
