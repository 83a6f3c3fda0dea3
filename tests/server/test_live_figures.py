"""The live figures (Metrics.live, Window) and the server config's bundled models and sidecars, in-process."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import rnnstream
from rnnstream.server.app import create_app
from rnnstream.server.config import DEFAULT_MODELS, ServerConfig, load_models, sidecars
from rnnstream.server.metrics import Metrics, Window


def test_the_window_keeps_the_last_seconds_and_at_most_its_limit() -> None:
    window, key = Window(seconds=5.0, limit=3), (("model", "m"),)
    for t, value in enumerate([1.0, 2.0, 3.0, 4.0]):
        window.add(key, value, now=100.0 + t)
    span, values = window.recent(key, now=103.5)
    assert values == [2.0, 3.0, 4.0] and span == pytest.approx(2.5)  # the limit cut it: 3 values over 2.5 s
    assert window.recent(key, now=107.5) == (5.0, [4.0])
    assert window.recent((("model", "other"),), now=107.5) == (5.0, [])


def test_live_figures_are_rates_and_percentiles_over_the_window() -> None:
    metrics = Metrics()
    sizes, seconds = [4, 8, 12], [0.001, 0.002, 0.010]
    for size, duration in zip(sizes, seconds, strict=True):
        metrics.batch_size.observe(size, model="m")
        metrics.step_latency.observe(duration, model="m")
    for wait in np.linspace(0.0, 0.004, 24):
        metrics.queue_delay.observe(float(wait), model="m")
    metrics.token_batch.observe(6, model="t")
    metrics.token_step.observe(0.003, model="t")
    metrics.active_streams["m"] = lambda: 7
    live = metrics.live("m")
    assert live["steps_per_second"] == pytest.approx(sum(sizes) / 5.0)
    assert live["engine_calls_per_second"] == pytest.approx(3 / 5.0)
    assert live["step_p50_ms"] == pytest.approx(2.0) and live["step_p99_ms"] == pytest.approx(9.84)
    assert live["wait_p50_ms"] == pytest.approx(2.0) and live["wait_p99_ms"] == pytest.approx(3.96)
    assert live["active_streams"] == 7 and live["tokens_per_second"] == 0.0
    assert metrics.live("t")["tokens_per_second"] == pytest.approx(6 / 5.0)
    assert metrics.live("t")["token_step_p50_ms"] == pytest.approx(3.0)


def test_existing_prometheus_series_are_unchanged() -> None:
    metrics = Metrics(["seed", "text"])
    metrics.batch_size.observe(3, model="seed")
    metrics.tokens.inc(5, model="text")
    lines = metrics.render().splitlines()
    assert 'rnnstream_batch_size_bucket{le="4",model="seed"} 1.0' in lines
    assert 'rnnstream_batch_size_sum{model="seed"} 3.0' in lines
    assert 'rnnstream_generated_tokens_total{model="text"} 5.0' in lines
    new = lines.index("# TYPE rnnstream_generated_tokens_total counter")
    assert lines.index("# TYPE rnnstream_active_streams gauge") < new  # the new series come after the old ones


def test_bundled_models_by_name_and_their_sidecars() -> None:
    assert DEFAULT_MODELS == ["seed", "text", "co2"]
    models = load_models(["text", "forecaster=co2"])
    assert models["text"].fingerprint == rnnstream.load(rnnstream.demo.TEXT_MODEL).fingerprint
    assert models["forecaster"].fingerprint == rnnstream.load(rnnstream.demo.CO2_MODEL).fingerprint
    notes = sidecars(["seed", "text", "forecaster=co2", "builtin:identity"])
    assert sorted(notes) == ["forecaster", "text"]
    assert notes["text"]["tokens"] == rnnstream.demo.text_vocabulary().tokens
    assert notes["forecaster"]["feedback"] == {"co2": [0]}


def test_a_sidecar_vocabulary_travels_with_a_model_file(tmp_path: Path) -> None:
    model = tmp_path / "chars.keras"
    shutil.copy(rnnstream.demo.TEXT_MODEL, model)
    tokens = rnnstream.demo.text_vocabulary().tokens
    (tmp_path / "chars.json").write_text(json.dumps({"tokens": tokens}))
    app = create_app(ServerConfig(models=[str(model)]))
    assert app.state.tokens.services["chars"].vocabulary.tokens == tokens
    (tmp_path / "chars.json").write_text(json.dumps({"tokens": tokens[:-1]}))
    with pytest.raises(rnnstream.ModelFileError, match="scores 76 tokens but its sidecar vocabulary lists 75"):
        create_app(ServerConfig(models=[str(model)]))
    (tmp_path / "chars.json").write_text(json.dumps({"tokens": "abc"}))
    with pytest.raises(rnnstream.ModelFileError, match="a list of strings"):
        sidecars([str(model)])
    (tmp_path / "chars.json").write_text("{not json")
    with pytest.raises(rnnstream.ModelFileError, match="not readable JSON"):
        sidecars([str(model)])
    (tmp_path / "chars.json").unlink()
    assert create_app(ServerConfig(models=[str(model)])).state.tokens.services["chars"].vocabulary is None


@pytest.mark.parametrize("field", ["max_tokens", "max_generations"])
def test_generation_limits_must_be_positive(field: str) -> None:
    with pytest.raises(rnnstream.InputError, match=field):
        ServerConfig(**{field: 0})  # type: ignore[arg-type]
