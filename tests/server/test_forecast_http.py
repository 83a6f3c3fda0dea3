"""The forecast endpoint, the live figures, the demo series and the page's files, against a real server."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import numpy as np
import pytest

import rnnstream
from rnnstream.demo import co2_calendar, co2_series
from tests.server.conftest import ServerProcess

CO2 = rnnstream.load(rnnstream.demo.CO2_MODEL)
SERIES = co2_series()
CALENDAR = co2_calendar(SERIES.dates)
INFER = "/v2/models/co2/infer"
FORECAST = "/v2/models/co2/forecast"


def step_body(t: int, sequence_id: str, **parameters: Any) -> dict[str, Any]:
    """Week ``t`` of the real series as one infer request."""
    return {
        "inputs": [
            {"name": "co2", "shape": [1, 1], "datatype": "FP32", "data": [float(SERIES.values[t])]},
            {"name": "calendar", "shape": [1, 2], "datatype": "FP32", "data": CALENDAR[t].tolist()},
        ],
        "parameters": {"sequence_id": sequence_id, **parameters},
    }


def replay(client: httpx.Client, weeks: int) -> tuple[str, rnnstream.Streams]:
    """Step a new stream through the first ``weeks`` weeks over HTTP, and an in-process twin."""
    sequence_id = f"co2-{uuid.uuid4().hex[:8]}"
    twin = rnnstream.Streams(CO2)
    for t in range(weeks):
        response = client.post(INFER, json=step_body(t, sequence_id, sequence_start=t == 0, sequence_step=t + 1))
        assert response.status_code == 200, response.text
        twin.step({"s": {"co2": SERIES.values[t : t + 1], "calendar": CALENDAR[t]}})
    return sequence_id, twin


def test_the_forecast_equals_forecast_stream_and_leaves_the_stream_as_it_was(demo_server: ServerProcess) -> None:
    weeks, horizon = 80, 26
    future = co2_calendar(SERIES.dates[weeks : weeks + horizon])  # (H, 2): the weeks forecast
    with httpx.Client(base_url=demo_server.url) as client:
        sequence_id, twin = replay(client, weeks)
        reply = client.post(FORECAST, json={"sequence_id": sequence_id, "horizon": horizon, "noise": 0.3,
                                            "paths": 40, "seed": 5, "exogenous": {"calendar": future.tolist()},
                                            "quantiles": [0.1, 0.5, 0.9]})
        assert reply.status_code == 200, reply.text
        after = client.post(INFER, json=step_body(weeks, sequence_id, sequence_step=weeks + 1))
    expected = rnnstream.forecast_stream(twin, "s", horizon, feedback={"co2": [0]}, exogenous={"calendar": future},
                                         noise=0.3, paths=40, seed=5)
    got = reply.json()
    assert got["model_name"] == "co2" and got["sequence_id"] == sequence_id and got["paths"] == 40
    np.testing.assert_allclose(got["point"], expected.point, rtol=0, atol=1e-4)
    quantiles = expected.quantiles([0.1, 0.5, 0.9])
    for i, entry in enumerate(got["quantiles"]):
        np.testing.assert_allclose(entry["values"], quantiles[i], rtol=0, atol=1e-3)
    assert [q["q"] for q in got["quantiles"]] == [0.1, 0.5, 0.9]
    # the stream went on from where it was: the next step (number weeks + 1) equals the twin's next output
    assert after.status_code == 200, after.text
    next_output = twin.step({"s": {"co2": SERIES.values[weeks : weeks + 1], "calendar": CALENDAR[weeks]}})["s"]
    assert after.json()["outputs"][0]["data"][0] == pytest.approx(float(next_output[0]), abs=1e-4)


def test_without_noise_every_quantile_is_the_point_forecast(demo_server: ServerProcess) -> None:
    with httpx.Client(base_url=demo_server.url) as client:
        sequence_id, _ = replay(client, 60)
        got = client.post(FORECAST, json={"sequence_id": sequence_id, "horizon": 4,
                                          "exogenous": {"calendar": co2_calendar(SERIES.dates[60:63]).tolist()}})
    body = got.json()
    assert got.status_code == 200 and body["paths"] == 1 and body["sigma"] == [0.0]
    assert all(q["values"] == body["point"] for q in body["quantiles"])


def test_bad_forecast_requests_get_4xx_naming_the_problem(demo_server: ServerProcess) -> None:
    calendar = co2_calendar(SERIES.dates[10:14]).tolist()
    with httpx.Client(base_url=demo_server.url) as client:
        sequence_id, _ = replay(client, 3)
        good = {"sequence_id": sequence_id, "horizon": 4, "exogenous": {"calendar": calendar}}
        cases = [
            ({**good, "sequence_id": "never-stepped"}, 400, "no stream 'never-stepped'"),
            ({**good, "horizon": 0}, 400, "Expected `int` >= 1 - at `$.horizon`"),
            ({k: v for k, v in good.items() if k != "horizon"}, 400, "horizon"),
            ({**good, "paths": 10}, 400, "needs noise"),
            ({**good, "noise": -1}, 400, "`$.noise`"),
            ({**good, "noise": 0.1, "paths": 500_000}, 400, "max_forecast_paths"),
            ({**good, "noise": 0.1, "paths": 10_000, "horizon": 100}, 400, "max_forecast_steps"),
            ({**good, "quantiles": [0.5] * 100}, 400, "max_quantiles"),
            ({**good, "quantiles": []}, 400, "quantiles must list"),
            ({**good, "exogenous": {"calendar": calendar[:2]}}, 400, "exogenous for input 'calendar'"),
            ({**good, "exogenous": None}, 400, "exogenous="),
            ({**good, "quantiles": [1.5]}, 400, "quantiles"),
            ({**good, "feedback": {"nope": [0]}}, 400, "feedback names inputs ['nope']"),
            ({**good, "extra": 1}, 400, "unknown field `extra`"),
            ({**good, "sequence_id": True}, 400, "sequence_id"),
        ]
        for body, status, message in cases:
            response = client.post(FORECAST, json=body)
            assert response.status_code == status, (body, response.text)
            assert message in response.json()["error"], (body, response.json())
        assert client.post("/v2/models/nope/forecast", json=good).status_code == 404
        assert client.post(FORECAST, content=b"{").status_code == 400


def test_stats_show_the_models_and_their_live_figures(demo_server: ServerProcess) -> None:
    with httpx.Client(base_url=demo_server.url) as client:
        replay(client, 20)
        client.post("/v2/models/text/generate", json={"text_input": "KING.\n", "parameters": {"max_tokens": 50}})
        stats = client.get("/v2/stats").json()
    models = {m["name"]: m for m in stats["models"]}
    assert {n: m["kind"] for n, m in models.items()} == {"seed": "values", "text": "tokens", "co2": "forecaster"}
    assert models["text"]["vocabulary"] and not models["seed"]["vocabulary"]
    assert models["co2"]["steps_per_second"] > 0 and models["co2"]["active_streams"] >= 1
    assert models["co2"]["step_p99_ms"] >= models["co2"]["step_p50_ms"] > 0
    assert models["text"]["tokens_per_second"] > 0 and models["text"]["token_step_p50_ms"] > 0
    assert stats["window_seconds"] == 5.0 and stats["max_generations"] == 12


def test_the_demo_series_for_the_page(demo_server: ServerProcess) -> None:
    data = httpx.get(demo_server.url + "/demo/co2.json").json()
    n = len(SERIES.values)
    assert data["model"] == "co2" and len(data["values"]) == n and len(data["dates"]) == n + 156
    assert data["dates"][:n] == [str(d) for d in SERIES.dates]
    np.testing.assert_allclose(data["values"], SERIES.values, atol=0.006)
    dates = np.array(data["dates"], "datetime64[D]")
    assert np.all(np.diff(dates) == np.timedelta64(7, "D"))  # weekly, on past the end of the series
    np.testing.assert_allclose(data["calendar"], co2_calendar(dates), atol=1e-6)
    assert 0.1 < data["noise"] < 1.0  # the model's one-step error, in ppm


def test_the_page_and_its_files_are_served(demo_server: ServerProcess) -> None:
    with httpx.Client(base_url=demo_server.url) as client:
        page = client.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "/static/app.js" in page.text and 'id="chart"' in page.text
        script = client.get("/static/app.js")
        assert script.status_code == 200 and "javascript" in script.headers["content-type"]
        assert client.get("/static/style.css").status_code == 200
        assert client.get("/static/nope.js").status_code == 404
        metrics = client.get("/metrics").text
    for series in ("rnnstream_requests_total", "rnnstream_batch_size", "rnnstream_active_streams",
                   "rnnstream_generated_tokens_total", "rnnstream_generate_streams", "rnnstream_active_generations"):
        assert f"# TYPE {series} " in metrics


def test_with_a_token_the_page_is_public_and_the_data_is_not(seed_token_server: ServerProcess) -> None:
    with httpx.Client(base_url=seed_token_server.url) as client:
        assert client.get("/").status_code == 200
        assert client.get("/static/app.js").status_code == 200
        for path in ("/v2/stats", "/demo/co2.json", "/v2/models/seed/forecast"):
            assert client.get(path).status_code == 401
        auth = {"Authorization": "Bearer s3cret"}
        assert client.get("/v2/stats", headers=auth).json()["models"][0]["name"] == "seed"
        missing = client.get("/demo/co2.json", headers=auth)  # only seed is served
        assert missing.status_code == 404 and "co2" in missing.json()["error"]
        refused = client.post("/v2/models/seed/generate", json={"input_ids": [1]}, headers=auth)
        assert refused.status_code == 400 and "none" in refused.json()["error"]  # no token model here
