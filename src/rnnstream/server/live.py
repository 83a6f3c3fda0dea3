"""The live page and what it reads: ``GET /`` (``static/index.html``, ``app.js``, ``style.css``: plain HTML,
JS and CSS, no build step), ``GET /v2/stats`` (live figures by model) and ``GET /demo/co2.json`` (the
series the page replays through the bundled CO2 forecaster).

The page and its files are public (they hold no data): with ``--token`` the page asks for the token (a
field, or ``/?token=...``) and sends it as ``Authorization: Bearer`` on every request.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from rnnstream.demo import CO2_MODEL, co2_calendar, co2_series, forecast_dates
from rnnstream.importers import load
from rnnstream.model import StreamModel
from rnnstream.server.generate_http import TokenServices
from rnnstream.server.metrics import LIVE_SECONDS
from rnnstream.server.served import ServerState

STATIC = Path(__file__).parent / "static"
DEMO_HORIZON = 156
"""Weeks of calendar rows past the end of the CO2 series, so the page can forecast from its last week."""


def bundled_co2(models: dict[str, StreamModel]) -> str | None:
    """The name under which the bundled CO2 forecaster is served (same fingerprint), or None.

    >>> import rnnstream
    >>> bundled_co2({"seed": rnnstream.load(rnnstream.demo.SEED_MODEL), "f": rnnstream.load(CO2_MODEL)})
    'f'
    """
    fingerprint = load(CO2_MODEL).fingerprint
    return next((name for name, model in models.items() if model.fingerprint == fingerprint), None)


def co2_demo(model_name: str, model: StreamModel) -> bytes:
    """The replay data as JSON: weekly ``dates`` (then ``DEMO_HORIZON`` weeks past the end), ``values``
    (ppm), ``calendar`` rows for every date (the forecaster's second input), and ``noise``: the std of the
    model's one-step errors over the series, the σ of the page's forecast cone.

    >>> data = json.loads(co2_demo("co2", load(CO2_MODEL)))
    >>> data["model"], len(data["values"]), len(data["calendar"]) - len(data["values"])
    ('co2', 2284, 156)
    """
    series = co2_series()
    n = len(series.values)
    dates = np.concatenate([series.dates, forecast_dates(series, n, DEMO_HORIZON)])
    calendar = co2_calendar(dates)  # (n + DEMO_HORIZON, 2)
    ys, _ = model.run([series.values[None, :, None], calendar[None, :n]], model.initial_state(1))
    errors = series.values[1:] - np.asarray(ys)[0, :-1, 0]  # (n - 1,): next week's value vs its forecast
    return json.dumps({
        "model": model_name,
        "dates": [str(d) for d in dates],
        "values": [round(float(v), 2) for v in series.values],
        "interpolated": [bool(i) for i in series.interpolated],
        "calendar": np.round(calendar, 7).tolist(),
        "noise": round(float(np.std(errors, ddof=1)), 4),
    }, separators=(",", ":")).encode()


class LivePage:
    """The routes of the page, the stats and the demo data of one app."""

    def __init__(self, state: ServerState, tokens: TokenServices,
                 sidecars: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self.state, self.tokens, self.sidecars = state, tokens, sidecars or {}
        self.co2 = bundled_co2({n: s.model for n, s in state.models.items()})
        self._co2_json: bytes | None = None

    async def index(self, request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    async def stats(self, request: Request) -> Response:
        """Every model's kind (``tokens``: a token model; ``forecaster``: the bundled CO2 model or one whose
        sidecar has ``feedback``; else ``values``), its ``feedback`` and live figures over the last few seconds
        (on a worker thread: the stream counts may ask a Redis store)."""
        return JSONResponse(await asyncio.to_thread(self._stats))

    def _stats(self) -> dict[str, Any]:
        models = []
        for name, served in self.state.models.items():
            service = self.tokens.services.get(name)
            feedback = self.sidecars.get(name, {}).get("feedback")
            forecaster = name == self.co2 or feedback is not None
            kind = "forecaster" if forecaster else "tokens" if service is not None else "values"
            entry: dict[str, Any] = {"name": name, "kind": kind, "bundled_co2": name == self.co2,
                                     "feedback": feedback,
                                     "vocabulary": service is not None and service.vocabulary is not None}
            entry.update(self.state.metrics.live(served.name))
            models.append(entry)
        return {"window_seconds": LIVE_SECONDS, "models": models, "generations": self.tokens.running,
                "max_generations": self.tokens.limit}

    async def co2_json(self, request: Request) -> Response:
        if self.co2 is None:
            served = ", ".join(self.state.models)
            return JSONResponse({"error": f"this server does not serve the bundled CO2 forecaster (it serves "
                                          f"{served}); start it with `rnnstream serve` or add the model spec co2"},
                                status_code=404)
        if self._co2_json is None:
            model = self.state.models[self.co2].model
            self._co2_json = await asyncio.to_thread(co2_demo, self.co2, model)
        return Response(self._co2_json, media_type="application/json")

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/", self.index),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
            Route("/v2/stats", self.stats),
            Route("/demo/co2.json", self.co2_json),
        ]
