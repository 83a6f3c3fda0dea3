"""The server's shared state: the served models (each with its pool and batcher) and the metrics.

Every transport (HTTP, WebSocket, generation, forecasts, the live page) finds a model here by name.

>>> from rnnstream.server.config import ServerConfig
>>> state = ServerState(ServerConfig(models=["builtin:identity"]))
>>> state.find("identity").name
'identity'
>>> state.find("nope")
Traceback (most recent call last):
rnnstream.server.refusals.NotFoundError: no model 'nope'; serving identity
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rnnstream.model import StreamModel
from rnnstream.server.batcher import Batcher
from rnnstream.server.config import ServerConfig, load_models
from rnnstream.server.metrics import Metrics
from rnnstream.server.refusals import NotFoundError
from rnnstream.streams import Streams


@dataclass
class ServedModel:
    """One served model: its name, the model, its pool of streams and its batcher."""

    name: str
    model: StreamModel
    streams: Streams
    batcher: Batcher

    def outputs_by_name(self, result: Any) -> dict[str, Any]:
        values = result if isinstance(result, list) else [result]
        return dict(zip(self.model.output_names, values, strict=True))


class ServerState:
    """The served models and the metrics, shared by every route."""

    def __init__(self, config: ServerConfig, models: dict[str, StreamModel] | None = None) -> None:
        """Serve ``models`` (default: the ones ``config`` names, loaded now) under ``config``."""
        if models is None:
            models = load_models(config.models, config.threads)
        self.config = config
        self.metrics = Metrics(models)
        self.models: dict[str, ServedModel] = {}
        for name, model in models.items():
            streams = Streams(model, config.store, ttl=config.ttl, max_streams=config.max_streams)
            batcher = Batcher(streams, name=name, max_batch=config.max_batch,
                              max_delay=config.max_delay_ms / 1000, timeout=config.timeout, metrics=self.metrics,
                              check_finite=not config.allow_nonfinite)
            self.models[name] = ServedModel(name, model, streams, batcher)
            self.metrics.active_streams[name] = streams.__len__
        self.ready = False
        self.grpc_port: int | None = None
        """The port gRPC listens on, once it does (``ServerConfig.grpc_address``)."""

    def find(self, name: str, version: str | None = None) -> ServedModel:
        """The served model ``name`` (version ``1`` or none); NotFoundError (a 404) lists the served ones."""
        served = self.models.get(name)
        if served is None or version not in (None, "1"):
            known = ", ".join(sorted(self.models))
            which = shown(name) + (f" version {shown(version)}" if version else "")
            raise NotFoundError(f"no model {which}; serving {known}")
        return served


def shown(name: str) -> str:
    """A name from a request, quoted and cut short for an error message."""
    return repr(name if len(name) <= 80 else name[:77] + "...")
