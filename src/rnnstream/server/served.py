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

import asyncio
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rnnstream.errors import StreamEndedError, StreamNotFoundError
from rnnstream.model import StreamModel
from rnnstream.server.batcher import Batcher, resolve
from rnnstream.server.config import ServerConfig, load_models
from rnnstream.server.metrics import Metrics
from rnnstream.server.refusals import NotFoundError
from rnnstream.step_request import Result, StepRequest
from rnnstream.streams import Streams
from rnnstream.types import Outputs


@dataclass
class ServedModel:
    """One served model version: its name and version, the model, its pool of streams and its batcher."""

    name: str
    model: StreamModel
    streams: Streams
    batcher: Batcher
    version: str = "1"

    def outputs_by_name(self, result: Any) -> dict[str, Any]:
        values = result if isinstance(result, list) else [result]
        return dict(zip(self.model.output_names, values, strict=True))


class ServerState:
    """The served models (every version loaded) and the metrics, shared by every route.

    ``models`` holds each model's newest version (what a request that names no version gets);
    ``versions`` every loaded version of each, oldest first. A step that names no version and does not
    start its stream goes to the newest version that holds the stream (:meth:`submit`): streams keep
    stepping on the version their state belongs to until they end, new streams start on the newest.
    """

    def __init__(self, config: ServerConfig, models: dict[str, StreamModel] | None = None) -> None:
        """Serve ``models`` (default: the ones ``config`` names, loaded now) under ``config``."""
        if models is None:
            models = load_models(config.model_specs, config.threads, config.precision)
        self.config = config
        self.metrics = Metrics(models)
        self.models: dict[str, ServedModel] = {}
        self.versions: dict[str, dict[str, ServedModel]] = {}
        for name, model in models.items():
            self.add(self.serve(name, model, config.version_of(name)))
        self.ready = False
        self.grpc_port: int | None = None
        """The port gRPC listens on, once it does (``ServerConfig.grpc_address``)."""

    def serve(self, name: str, model: StreamModel, version: str) -> ServedModel:
        """A pool and a batcher for ``model`` (not yet served: :meth:`add`; its batcher not yet started)."""
        config = self.config
        streams = Streams(model, config.store, ttl=config.ttl, max_streams=config.max_streams)
        batcher = Batcher(streams, name=name, max_batch=config.max_batch, max_delay=config.max_delay_ms / 1000,
                          timeout=config.timeout, metrics=self.metrics, check_finite=not config.allow_nonfinite)
        return ServedModel(name, model, streams, batcher, version)

    def add(self, served: ServedModel) -> None:
        """Serve ``served``: the newest version of its model from now on."""
        self.versions.setdefault(served.name, {})[served.version] = served
        self.models[served.name] = served
        self.metrics.add_model(served.name)
        self.metrics.active_streams[served.name] = served.streams.__len__
        self.metrics.versions[served.name, served.version] = (served.batcher.statistics, served.streams.__len__)

    def remove(self, served: ServedModel) -> None:
        """Stop serving ``served`` (its batcher is the caller's to close): the newest remaining version
        takes its place, or the model is gone."""
        versions = self.versions[served.name]
        del versions[served.version]
        self.metrics.versions.pop((served.name, served.version), None)
        if versions:
            self.models[served.name] = versions[max(versions, key=int)]
            self.metrics.active_streams[served.name] = self.models[served.name].streams.__len__
        else:
            del self.versions[served.name], self.models[served.name]
            self.metrics.active_streams.pop(served.name, None)

    def holder(self, served: ServedModel, stream_id: str) -> ServedModel:
        """The newest version of ``served``'s model that holds stream ``stream_id``, else ``served``.
        Blocking (the store may be asked): call it from a worker thread."""
        versions = self.versions[served.name]
        if len(versions) > 1:
            for version in sorted(versions.values(), key=lambda v: -int(v.version)):
                if stream_id in version.streams:
                    return version
        return served

    def find(self, name: str, version: str | None = None) -> ServedModel:
        """The served model ``name``: its newest version, or ``version``; NotFoundError (a 404) lists the
        served ones."""
        served = self.models.get(name) if version is None else self.versions.get(name, {}).get(version)
        if served is None:
            known = ", ".join(f"{n} (versions {', '.join(v)})" if len(v) > 1 else n
                              for n, v in sorted(self.versions.items()))
            which = shown(name) + (f" version {shown(version)}" if version else "")
            raise NotFoundError(f"no model {which}; serving {known}")
        return served

    def submit(self, served: ServedModel, step: StepRequest, done: Callable[[Result], None], *,
               pinned: bool = False) -> None:
        """Queue ``step`` for ``served`` (found by :meth:`find`); ``done`` gets its result. With several
        versions loaded, a step that neither starts its stream nor names its version (``pinned``) goes to
        the newest version that holds the stream: each older one is asked in turn while the newer ones
        answer that they do not know it. (In-band: the pool's own read of the stream's record answers.)"""
        versions = self.versions[served.name]
        if pinned or step.start or len(versions) == 1:
            served.batcher.enqueue_call(step, done)
            return
        newest_first = sorted(versions.values(), key=lambda v: -int(v.version))
        self.ask(newest_first, step, done)

    def ask(self, versions: list[ServedModel], step: StepRequest, done: Callable[[Result], None]) -> None:
        if len(versions) == 1:
            versions[0].batcher.enqueue_call(step, done)
            return

        def answered(result: Result) -> None:
            unknown = isinstance(result, StreamNotFoundError) and not isinstance(result, StreamEndedError)
            if unknown:
                versions[0].batcher.statistics.passed_on()  # not that version's failure: its stream is elsewhere
                self.ask(versions[1:], step, done)
            else:
                done(result)

        versions[0].batcher.enqueue_call(step, answered)

    def enqueue(self, served: ServedModel, step: StepRequest, *, pinned: bool = False) -> asyncio.Future[Outputs]:
        """:meth:`submit`, with a future for the outputs (or the error)."""
        future: asyncio.Future[Outputs] = asyncio.get_running_loop().create_future()
        self.submit(served, step, functools.partial(resolve, future), pinned=pinned)
        return future


def shown(name: str) -> str:
    """A name from a request, quoted and cut short for an error message."""
    return repr(name if len(name) <= 80 else name[:77] + "...")
