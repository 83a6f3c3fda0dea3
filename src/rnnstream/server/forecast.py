"""``POST /v2/models/{name}[/versions/1]/forecast``: a forecast cone from a live stream, which stays as it was.

Request::

    {"sequence_id": "sensor-1", "horizon": 52, "noise": 0.3, "paths": 100, "seed": 0,
     "exogenous": {"calendar": [[0.1, 0.99], ...]}, "quantiles": [0.05, 0.25, 0.5, 0.75, 0.95]}

``sequence_id`` names a stream stepped through ``/infer`` or ``/v2/stream``; the forecast starts from its
state and last output (:func:`rnnstream.forecast_stream`, on a copy, in a worker thread). ``feedback``
(``{input: [output columns]}``) defaults to the model's sidecar; ``exogenous`` gives the inputs' other
columns at each forecast time (H or H − 1 rows); ``noise`` σ (one, or one per output column) with ``paths``
scenario paths gives the quantiles (``quantiles``, default 5 %, 25 %, 50 %, 75 %, 95 %).

Reply: ``{"model_name", "sequence_id", "horizon", "point": [H][O], "quantiles": [{"q", "values": [H][O]}],
"sigma": [O], "paths": P}`` (without noise every quantile is the point forecast).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from rnnstream.errors import RnnstreamError
from rnnstream.generation.forecast import Forecast, forecast_stream
from rnnstream.server.app import ServedModel, ServerState, error_response, read_body
from rnnstream.server.oip import ProtocolError, json_object

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
MAX_STEPS = 1_000_000
"""The most stream-steps one forecast may take: horizon × (paths + 1)."""
FIELDS = {"sequence_id", "horizon", "noise", "paths", "seed", "exogenous", "feedback", "quantiles"}


def parse_forecast(body: bytes, default_feedback: Any) -> tuple[str, int, dict[str, Any], tuple[float, ...]]:
    """The stream id, the horizon, the other arguments of ``forecast_stream`` and the quantiles of a request
    body; a bad field raises ProtocolError naming it.

    >>> stream_id, horizon, options, quantiles = parse_forecast(b'{"sequence_id": 7, "horizon": 3}', None)
    >>> stream_id, horizon, options["paths"], quantiles
    ('7', 3, None, (0.05, 0.25, 0.5, 0.75, 0.95))
    """
    data = json_object(body)
    unknown = sorted(set(data) - FIELDS)
    if unknown:
        raise ProtocolError(f"unknown fields {unknown}; a forecast request takes {sorted(FIELDS)}")
    sequence_id = data.get("sequence_id")
    if isinstance(sequence_id, bool) or not isinstance(sequence_id, int | str) or sequence_id in (0, ""):
        raise ProtocolError(f"sequence_id must be a non-zero integer or a non-empty string, got {sequence_id!r}")
    horizon = _integer(data, "horizon", 1, MAX_STEPS)
    paths = _integer(data, "paths", 1, MAX_STEPS) if data.get("paths") is not None else None
    if horizon is None:
        raise ProtocolError("horizon (forecast steps, an integer ≥ 1) is required")
    steps = horizon * ((paths or 0) + 1)
    if steps > MAX_STEPS:
        raise ProtocolError(f"horizon × (paths + 1) = {steps:,} steps; the limit is {MAX_STEPS:,}")
    seed = _integer(data, "seed", 0, 2**64 - 1)
    noise = data.get("noise")
    numbers: list[Any] = noise if isinstance(noise, list) else [noise]
    if noise is not None and not all(_number(n) and n >= 0 for n in numbers):
        raise ProtocolError(f"noise must be σ ≥ 0, one number or one per output column, or null; got {noise!r}")
    quantiles: Any = data.get("quantiles", list(QUANTILES))
    if not isinstance(quantiles, list) or not 1 <= len(quantiles) <= 99 or \
            not all(_number(q) and 0 <= q <= 1 for q in quantiles):
        raise ProtocolError(f"quantiles must be a list of 1 to 99 numbers in [0, 1], got {quantiles!r}")
    exogenous, feedback = data.get("exogenous"), data.get("feedback", default_feedback)
    if exogenous is not None and not isinstance(exogenous, list | dict):
        raise ProtocolError(f"exogenous must be rows [H][E] or {{input: rows}}, got {exogenous!r}")
    if feedback is not None and not isinstance(feedback, dict):
        raise ProtocolError(f"feedback must be {{input: [output columns]}} or {{column: output column}}, "
                            f"got {feedback!r}")
    if isinstance(feedback, dict) and all(isinstance(k, str) and k.isdigit() for k in feedback):
        feedback = {int(k): v for k, v in feedback.items()}  # JSON keys are strings: {"0": 0} is column 0
    options = {"feedback": feedback, "exogenous": exogenous, "noise": noise, "paths": paths, "seed": seed}
    return str(sequence_id), horizon, options, tuple(float(q) for q in quantiles)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _integer(data: Mapping[str, Any], key: str, low: int, high: int) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ProtocolError(f"{key} must be an integer from {low} to {high:,}, got {value!r}")
    return value


def forecast_reply(name: str, sequence_id: str, result: Forecast, quantiles: tuple[float, ...]) -> dict[str, Any]:
    """The JSON reply: point forecast, the quantiles of the paths, σ and the number of paths.

    >>> import numpy as np
    >>> paths = np.float32([[[1.0], [2.0]], [[3.0], [4.0]]])  # (P=2, H=2, O=1)
    >>> reply = forecast_reply("m", "s", Forecast(paths.mean(0), paths, np.float32([0.5])), (0.5,))
    >>> reply["point"], reply["quantiles"], reply["paths"]
    ([[2.0], [3.0]], [{'q': 0.5, 'values': [[2.0], [3.0]]}], 2)
    """
    values = result.quantiles(quantiles)  # (Q, H, O)
    return {
        "model_name": name,
        "sequence_id": sequence_id,
        "horizon": result.horizon,
        "point": result.point.tolist(),
        "quantiles": [{"q": q, "values": v.tolist()} for q, v in zip(quantiles, values, strict=True)],
        "sigma": result.sigma.tolist(),
        "paths": int(result.paths.shape[0]),
    }


async def forecast(request: Request) -> Response:
    state: ServerState = request.app.state.server
    try:
        served: ServedModel = state.find(request.path_params["name"], request.path_params.get("version"))
    except LookupError as error:
        return JSONResponse({"error": str(error)}, status_code=404)
    sidecars: Mapping[str, Mapping[str, Any]] = request.app.state.sidecars
    try:
        body = await read_body(request, state.config.max_body_bytes)
        stream_id, horizon, options, quantiles = parse_forecast(body, sidecars.get(served.name, {}).get("feedback"))
        result = await asyncio.to_thread(forecast_stream, served.streams, stream_id, horizon, **options)
    except RnnstreamError as error:
        state.metrics.errors.inc(model=served.name, error=type(error).__name__)
        return error_response(error)
    return JSONResponse(forecast_reply(served.name, stream_id, result, quantiles))


def routes() -> list[Route]:
    return [Route(prefix + "/forecast", forecast, methods=["POST"])
            for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}")]
