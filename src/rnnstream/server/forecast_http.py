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

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from rnnstream.errors import RnnstreamError
from rnnstream.generation.forecast import Forecast, forecast_stream
from rnnstream.model import StreamModel
from rnnstream.server import limits
from rnnstream.server.asgi import error_response, read_body
from rnnstream.server.config import ServerConfig
from rnnstream.server.oip import check_id
from rnnstream.server.refusals import ProtocolError
from rnnstream.server.schema import ForecastRequest, decode
from rnnstream.server.served import ServedModel, ServerState

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def parse_forecast(body: bytes, model: StreamModel, default_feedback: Any, config: ServerConfig
                   ) -> tuple[str, int, dict[str, Any], tuple[float, ...]]:
    """The stream id, the horizon, the other arguments of ``forecast_stream`` and the quantiles of a request
    body; a bad field raises ProtocolError naming it, a request past a limit LimitError (both before any work).

    >>> import rnnstream
    >>> from rnnstream.server.config import ServerConfig
    >>> seed = rnnstream.load(rnnstream.demo.SEED_MODEL)
    >>> stream_id, horizon, options, quantiles = parse_forecast(b'{"sequence_id": 7, "horizon": 3}', seed, None,
    ...                                                         ServerConfig())
    >>> stream_id, horizon, options["paths"], quantiles
    ('7', 3, None, (0.05, 0.25, 0.5, 0.75, 0.95))
    """
    request = decode(ForecastRequest, body)
    check_id(request.sequence_id, "sequence_id", config)
    quantiles = request.quantiles if request.quantiles is not None else list(QUANTILES)
    if not quantiles:
        raise ProtocolError("quantiles must list at least one number in [0, 1] (or be left out)")
    limits.check("max_quantiles", len(quantiles), config.max_quantiles)
    if request.paths is not None:
        limits.check("max_forecast_paths", request.paths, config.max_forecast_paths)
    limits.check("max_forecast_steps", request.horizon * ((request.paths or 0) + 1), config.max_forecast_steps)
    outputs = max((math.prod(spec.shape) for spec in model.output_specs), default=1)
    limits.check("max_forecast_values", request.horizon * outputs * (len(quantiles) + 1), config.max_forecast_values)
    feedback: Any = request.feedback if request.feedback is not None else default_feedback
    if isinstance(feedback, dict) and feedback and all(k.isdigit() for k in feedback):
        feedback = {int(k): v for k, v in feedback.items()}  # JSON keys are strings: {"0": 0} is column 0
    options = {"feedback": feedback, "exogenous": request.exogenous, "noise": request.noise, "paths": request.paths,
               "seed": request.seed}
    return str(request.sequence_id), request.horizon, options, tuple(quantiles)


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
    name = request.path_params["name"]
    sidecars: Mapping[str, Mapping[str, Any]] = request.app.state.sidecars
    try:
        served: ServedModel = state.find(name, request.path_params.get("version"))
        body = await read_body(request, state.config.max_body_bytes)
        stream_id, horizon, options, quantiles = parse_forecast(
            body, served.model, sidecars.get(served.name, {}).get("feedback"), state.config)
        if request.path_params.get("version") is None:  # the version that holds the stream, asked on a thread
            served = await asyncio.to_thread(state.holder, served, stream_id)
        reply = await asyncio.to_thread(_forecast, served, stream_id, horizon, options, quantiles)
    except RnnstreamError as error:
        state.metrics.refused(name, "forecast", error)
        return error_response(error)
    return Response(reply, media_type="application/json")


def _forecast(served: ServedModel, stream_id: str, horizon: int, options: dict[str, Any],
              quantiles: tuple[float, ...]) -> bytes:
    """On a worker thread: the forecast and its JSON reply (a big reply is encoded here, not on the loop)."""
    result = forecast_stream(served.streams, stream_id, horizon, **options)
    return orjson.dumps(forecast_reply(served.name, stream_id, result, quantiles), option=orjson.OPT_SERIALIZE_NUMPY)


def routes() -> list[Route]:
    return [Route(prefix + "/forecast", forecast, methods=["POST"])
            for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}")]
