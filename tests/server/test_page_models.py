"""The live page for a user's own models in real headless Chromium: a server serving only a user's Keras
models (a values model, a forecaster with a ``feedback`` sidecar, a token model with a vocabulary sidecar).

The picker lists them; "try it" steps a stream from typed values and from an uploaded CSV and charts its
outputs (equal to Keras' own); a stream stepped by another client (httpx) appears in the active list and its
live chart follows it when watched; the forecaster forecasts from its stream; the token model generates.
A screenshot goes to test-artifacts/ (docs/images/live_models.png is one).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

import rnnstream
from tests.server.conftest import ServerProcess
from tests.server.test_page import ARTIFACTS, browser, poll  # noqa: F401 (browser: the shared fixture)
from tests.zoo import randomize

keras = pytest.importorskip("keras")
TOL = {"rtol": 1e-5, "atol": 1e-5}


def build_models(folder: Path) -> dict[str, Path]:
    """sensor: 3 values → LSTM → 2 values; level: a forecaster of its one value (sidecar feedback); chars: a
    copy of the bundled text model under the user's name, with its vocabulary as a sidecar."""
    L = keras.layers
    sensor_in = L.Input((None, 3), name="reading")
    sensor = keras.Model(sensor_in, L.Dense(2, name="estimate")(L.LSTM(8, return_sequences=True)(sensor_in)))
    level_in = L.Input((None, 1), name="level")
    level = keras.Model(level_in, L.Dense(1, name="next")(L.GRU(6, return_sequences=True)(level_in)))
    paths = {"sensor": folder / "sensor.keras", "level": folder / "level.keras", "chars": folder / "chars.keras"}
    for seed, (model, path) in enumerate([(sensor, paths["sensor"]), (level, paths["level"])]):
        randomize(model, seed + 11)
        model.save(path)
    (folder / "level.json").write_text(json.dumps({"feedback": {"level": [0]}}))
    shutil.copy(rnnstream.demo.TEXT_MODEL, paths["chars"])
    (folder / "chars.json").write_text(json.dumps({"tokens": rnnstream.demo.text_vocabulary().tokens}))
    return paths


@pytest.fixture(scope="module")
def user_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, dict[str, Path]]]:
    paths = build_models(tmp_path_factory.mktemp("user-models"))
    process = ServerProcess(*(str(p) for p in paths.values())).start()
    yield process, paths
    process.stop()


def keras_outputs(path: Path, xs: np.ndarray) -> np.ndarray:
    """The saved model's own outputs for one sequence ``xs`` (T, features): (T, outputs)."""
    return np.asarray(keras.saving.load_model(path)(xs[None].astype(np.float32)))[0]


def step(client: httpx.Client, stream: str, x: list[float], start: bool) -> None:
    reply = client.post("/v2/models/sensor/infer", json={
        "inputs": [{"name": "reading", "shape": [1, 3], "datatype": "FP32", "data": x}],
        "parameters": {"sequence_id": stream, "sequence_start": start}})
    assert reply.status_code == 200, reply.text


def try_outputs(page: Any, name: str) -> np.ndarray:
    return np.array(page.evaluate(f"tryState.records.map((r) => r.outputs[{name!r}])"))


def try_typed_values_and_a_csv(page: Any, model: Path, xs: np.ndarray, csv: Path) -> None:
    """"Try it" on the picked model: typed lines, then an uploaded CSV; outputs charted, equal to Keras'."""
    page.fill("#try-values", "\n".join(", ".join(str(v) for v in row) for row in xs[:3]))
    page.click("#try-step")
    poll(page, "window.rnnstreamLive.models.tryPoints === 3")
    assert page.get_attribute("#try-chart", "data-points") == "3"
    np.testing.assert_allclose(try_outputs(page, "estimate"), keras_outputs(model, xs[:3]), **TOL)
    csv.write_text("a,b,c\n" + "\n".join(",".join(str(v) for v in row) for row in xs) + "\n")
    page.set_input_files("#try-csv", str(csv))
    poll(page, "window.rnnstreamLive.models.tryPoints === 7")
    assert "7 steps" in page.text_content("#try-status")
    np.testing.assert_allclose(try_outputs(page, "estimate"), keras_outputs(model, xs), **TOL)


def watch_another_clients_stream(page: Any, url: str, model: Path, xs: np.ndarray) -> None:
    """A stream stepped over HTTP by another client: listed first, then watched live as it steps."""
    with httpx.Client(base_url=url) as client:
        step(client, "pump-7", xs[0].tolist(), start=True)
        poll(page, "window.rnnstreamLive.models.streams.includes('pump-7')")
        assert page.evaluate("window.rnnstreamLive.models.streams[0]") == "pump-7"  # the most recent first
        page.click("#stream-list li[data-stream='pump-7'] button")
        poll(page, "document.getElementById('watch-title').textContent.includes('waiting')")
        for x in xs[1:5]:
            step(client, "pump-7", x.tolist(), start=False)
        poll(page, "window.rnnstreamLive.models.watchPoints === 4")
    poll(page, "document.getElementById('watch-chart').dataset.points === '4'")  # drawn at the next frame
    assert "step 5" in page.text_content("#watch-title")  # numbered from the stream's first step
    watched = np.array(page.evaluate("models.watch.records.map((r) => r.outputs.estimate)"))
    np.testing.assert_allclose(watched, keras_outputs(model, xs[:5])[1:], **TOL)
    page.click("#watch-legend button:first-child")  # hides the first line (estimate[0]); a second click shows it
    assert page.evaluate("models.hidden.has('estimate[0]')")
    assert page.get_attribute("#watch-legend button:first-child", "class") == "legend-item off"
    page.click("#watch-legend button:first-child")
    assert page.evaluate("models.hidden.size") == 0


def forecast_and_generate(page: Any) -> None:
    """The user's forecaster forecasts from a tried stream; the user's token model drives the text panel."""
    page.select_option("#model-picker", "level")
    poll(page, "window.rnnstreamLive.models.picked === 'level' && models.meta.inputs[0].name === 'level'")
    assert page.locator("#forecast-panel").is_visible()
    page.click("#try-step")
    poll(page, "window.rnnstreamLive.models.tryPoints === 3")
    page.click("#forecast-run")
    poll(page, "window.rnnstreamLive.models.forecastCone === 24")
    assert page.get_attribute("#try-chart", "data-cone") == "24"
    page.select_option("#model-picker", "chars")
    poll(page, "document.getElementById('text-model').textContent === 'chars'")
    page.fill("#prompt", "ROMEO.\n")
    page.fill("#max-tokens", "40")
    page.click("#generate")
    poll(page, "document.getElementById('finish').textContent === 'reached the token limit'")
    assert page.locator("#text-missing").is_hidden()


def test_the_page_shows_steps_and_charts_a_users_own_models(browser: Any, tmp_path: Path,  # noqa: F811
                                                            user_server: tuple[ServerProcess, dict[str, Path]]) -> None:
    server, paths = user_server
    page = browser.new_page(viewport={"width": 1360, "height": 1200})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(server.url + "/")
    poll(page, "document.getElementById('server').dataset.state === 'ready'")
    options = page.eval_on_selector_all("#model-picker option", "(os) => os.map((o) => o.value)")
    assert options == ["sensor", "level", "chars"]
    poll(page, "window.rnnstreamLive.models.picked === 'sensor' && models.meta !== null")
    assert "reading [3] FP32" in page.text_content("#model-io")
    xs = np.random.default_rng(4).normal(size=(7, 3)).round(3)
    try_typed_values_and_a_csv(page, paths["sensor"], xs, tmp_path / "readings.csv")
    watch_another_clients_stream(page, server.url, paths["sensor"], xs)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "live_models.png"), full_page=True)
    forecast_and_generate(page)
    missing = page.text_content("#chart-missing")  # no bundled CO2 model: says so, and names the user's forecaster
    assert "co2" in missing and "level" in missing and page.locator("#chart-sub").is_hidden()
    assert errors == []
    page.close()


def test_the_bundled_page_watches_its_replay_and_forecasts_a_tried_co2_stream(
        browser: Any, demo_server: ServerProcess) -> None:  # noqa: F811
    page = browser.new_page(viewport={"width": 1360, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(demo_server.url + "/")
    poll(page, "document.getElementById('server').dataset.state === 'ready'")
    page.select_option("#model-picker", "co2")
    poll(page, "window.rnnstreamLive.models.picked === 'co2' && models.meta.inputs.length === 2")
    page.fill("#try-values", "316.1, 1.0, 0.07\n316.3, 0.99, 0.19\n316.6, 0.96, 0.3")
    page.click("#try-step")
    poll(page, "window.rnnstreamLive.models.tryPoints === 3")
    page.click("#forecast-run")  # the calendar input held at its last row over the horizon
    poll(page, "window.rnnstreamLive.models.forecastCone === 24")
    assert "100 noisy paths" in page.text_content("#forecast-status")
    poll(page, "window.rnnstreamLive.models.streams.some((s) => s.startsWith('page-'))")  # the page's own replay
    page.click("#stream-list li[data-stream^='page-'] button")
    poll(page, "window.rnnstreamLive.models.watchPoints > 3")
    assert errors == []
    page.close()
