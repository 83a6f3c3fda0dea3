"""What a server serves and how: models by name, the store, batching and limits.

A served model file may carry a *sidecar*: ``<file stem>.json`` beside it. Its ``"tokens"`` list is the
vocabulary of a token model (the generate endpoints then take and return text); its ``"feedback"``
(``{input: [output columns]}``) says how a forecaster feeds its outputs back (the forecast endpoint's
default). The bundled ``text`` and ``co2`` models carry theirs.

>>> config = ServerConfig(models=["seed", "demo=builtin:identity", "text"])
>>> sorted(load_models(config.models))
['demo', 'seed', 'text']
>>> sorted(sidecars(config.models)), len(sidecars(["text"])["text"]["tokens"])
(['text'], 76)
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rnnstream.demo import CO2_MODEL, SEED_MODEL, TEXT_MODEL, builtin
from rnnstream.errors import InputError, ModelFileError
from rnnstream.importers import load
from rnnstream.model import StreamModel
from rnnstream.precision import check_precision
from rnnstream.server.limits import DEFAULTS, LIMITS
from rnnstream.server.repository import model_specs, version_of

BUNDLED = {"seed": SEED_MODEL, "text": TEXT_MODEL, "co2": CO2_MODEL}
"""Model specs that name a bundled model: the seed blog's model, the Shakespeare text model, the CO2 forecaster."""

DEFAULT_MODELS = ["seed", "text", "co2"]
"""Served when no model is named: every bundled model."""


@dataclass
class ServerConfig:
    """Everything ``rnnstream serve`` takes; it travels to worker processes as JSON."""

    models: list[str] = field(default_factory=lambda: list(DEFAULT_MODELS))
    store: str = "memory://"
    max_batch: int = 256
    max_delay_ms: float = 2.0
    timeout: float = 30.0
    token: str | None = None
    max_streams: int | None = None
    ttl: float | None = None
    threads: int | None = None
    allow_nonfinite: bool = False
    """Accept NaN and ±Inf inputs (refused with a 400 by default)."""
    precision: str = "fp32"
    """Every served model's weight precision (rnnstream.precision): ``fp32``, bfloat16 weight matrices
    (``bf16``, ``bf16-widen``, ``bf16-dot``) or int8 ones (``int8``); the state stays float32."""
    grpc_address: str | None = None
    """Where the app also serves Triton's gRPC protocol (``host:port``; port 0: any free one); None: no gRPC.
    ``rnnstream serve`` listens on ``--grpc-port`` (8001, as Triton)."""
    model_repository: str | None = None
    """A model repository in Triton's layout (rnnstream.server.repository): the newest version of each of its
    models is served beside ``models``."""
    workers: int = 1
    """Server processes (``rnnstream serve --workers``); more than one share the gRPC port (SO_REUSEPORT)."""
    # The limits (rnnstream.server.limits lists what each bounds and what exceeding it answers):
    max_body_bytes: int = DEFAULTS["max_body_bytes"]
    max_id_length: int = DEFAULTS["max_id_length"]
    max_ws_requests: int = DEFAULTS["max_ws_requests"]
    max_ws_inflight: int = DEFAULTS["max_ws_inflight"]
    max_grpc_inflight: int = DEFAULTS["max_grpc_inflight"]
    max_prompt_tokens: int = DEFAULTS["max_prompt_tokens"]
    max_tokens: int = DEFAULTS["max_tokens"]
    max_stop: int = DEFAULTS["max_stop"]
    max_stop_length: int = DEFAULTS["max_stop_length"]
    max_generations: int = DEFAULTS["max_generations"]
    max_sse_buffer: int = DEFAULTS["max_sse_buffer"]
    max_forecast_steps: int = DEFAULTS["max_forecast_steps"]
    max_forecast_paths: int = DEFAULTS["max_forecast_paths"]
    max_forecast_values: int = DEFAULTS["max_forecast_values"]
    max_quantiles: int = DEFAULTS["max_quantiles"]
    max_prime_steps: int = DEFAULTS["max_prime_steps"]
    max_listed_streams: int = DEFAULTS["max_listed_streams"]
    max_watchers: int = DEFAULTS["max_watchers"]
    max_watch_steps: int = DEFAULTS["max_watch_steps"]
    max_csv_rows: int = DEFAULTS["max_csv_rows"]

    def __post_init__(self) -> None:
        check_precision(self.precision)
        for limit in LIMITS:
            value = getattr(self, limit.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{limit.name} ({limit.flag}) must be a positive integer, got {value!r}")

    @property
    def model_specs(self) -> list[str]:
        """Every model to serve: ``models`` and the repository's newest versions (the bundled models when
        neither names one)."""
        found = model_specs(self.model_repository) if self.model_repository is not None else []
        return [*self.models, *found] or list(DEFAULT_MODELS)

    def version_of(self, name: str) -> str:
        """The version served of model ``name``: its repository folder's name, else "1"."""
        for spec in self.model_specs:
            if model_spec(spec)[0] == name:
                return version_of(spec, self.model_repository)
        return "1"

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @staticmethod
    def from_json(text: str) -> ServerConfig:
        return ServerConfig(**json.loads(text))


def model_spec(spec: str) -> tuple[str, str]:
    """``name=source`` → (name, source); a bare source names itself (file stem or built-in name)."""
    if "=" in spec:
        name, source = spec.split("=", 1)
        if not name:
            raise InputError(f"model {spec!r}: the name before '=' is empty")
        return name, source
    if spec in BUNDLED:
        return spec, spec
    if spec.startswith(builtin.PREFIX):
        return spec.removeprefix(builtin.PREFIX), spec
    return Path(spec).stem, spec


HEAVY_STEP = 1_000_000
"""Parameters (multiply-adds per stream and step) from which a served model's engine, not the event
loop, is the bottleneck: the loop spends ~10 µs on each step it reads, answers and writes back, about
what a core needs for this many multiply-adds."""


def server_threads(model: StreamModel, threads: int | None = None) -> int | None:
    """A served model's engine threads: ``threads``, else ``RNNSTREAM_THREADS`` (None: the backend reads
    it), else every core (None) for a model of ``HEAVY_STEP`` parameters and more, and every core but
    one, which the event loop keeps, for a lighter one. Measured with 1,000 WebSocket streams on 2
    cores: the seed model (283k parameters) carried ~15% more steps with one engine thread than with
    two, whose second thread shared the loop's core; the large model (3.4M) 33% fewer (15k against 22k
    steps/s): there the engine is what limits. While the event loop is busy (over HTTP), a launched step
    of a heavy model still gets only one of its threads (rnnstream.server.loop_load).

    >>> from rnnstream.demo import builtin
    >>> server_threads(builtin.build("large")) is None, server_threads(builtin.build("large"), 4)
    (True, 4)
    """
    if threads is not None or os.environ.get("RNNSTREAM_THREADS") or model.parameter_count >= HEAVY_STEP:
        return threads
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores - 1)


def load_models(specs: list[str], threads: int | None = None, precision: str = "fp32") -> dict[str, StreamModel]:
    """Load every model of ``specs``: ``seed``, ``text``, ``co2`` (bundled), ``builtin:NAME``, a file, or
    ``name=`` any of them.

    ``threads``: each model's engine threads (None: ``server_threads`` chooses); ``precision``: its
    weights' (rnnstream.precision; ``bf16-dot`` or ``int8`` where the backend cannot compute it raises InputError).
    """
    models: dict[str, StreamModel] = {}
    for spec in specs or DEFAULT_MODELS:
        name, source = model_spec(spec)
        if name in models:
            raise InputError(f"two models are named {name!r}; name them with name=MODEL")
        if source in BUNDLED:
            model = load(BUNDLED[source])
        elif source.startswith(builtin.PREFIX):
            model = builtin.build(source)
        else:
            model = load(source)
        chosen = server_threads(model, threads)
        if chosen is not None or precision != "fp32":
            model.set_backend("auto", threads=chosen, precision=precision)
        models[name] = model
    return models


def sidecars(specs: list[str]) -> dict[str, dict[str, Any]]:
    """The sidecar JSON of each model of ``specs`` that has one (``<file stem>.json`` beside the file), by name.

    A sidecar that is not a JSON object, or whose ``"tokens"`` is not a list of strings, raises ModelFileError.
    """
    found: dict[str, dict[str, Any]] = {}
    for spec in specs or DEFAULT_MODELS:
        name, source = model_spec(spec)
        if source.startswith(builtin.PREFIX):
            continue
        path = Path(BUNDLED.get(source, source)).with_suffix(".json")
        if not path.is_file():
            continue
        try:
            notes = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise ModelFileError(f"{path}: the sidecar of model {name!r} is not readable JSON ({error})") from None
        if not isinstance(notes, dict):
            raise ModelFileError(f"{path}: the sidecar of model {name!r} is a JSON object, got {type(notes).__name__}")
        tokens = notes.get("tokens")
        if tokens is not None and not (isinstance(tokens, list) and all(isinstance(t, str) for t in tokens)):
            raise ModelFileError(f"{path}: \"tokens\" is the vocabulary, a list of strings (token id i is tokens[i])")
        found[name] = notes
    return found
