"""What a server serves and how: models by name, the store, batching and limits.

>>> config = ServerConfig(models=["seed", "demo=builtin:identity"])
>>> sorted(load_models(config.models))
['demo', 'seed']
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rnnstream.demo import SEED_MODEL, builtin
from rnnstream.errors import InputError
from rnnstream.importers import load
from rnnstream.model import StreamModel

DEFAULT_MODELS = ["seed"]
"""Served when no model is named: the bundled seed model."""


@dataclass
class ServerConfig:
    """Everything ``rnnstream serve`` takes; it travels to worker processes as JSON."""

    models: list[str] = field(default_factory=lambda: list(DEFAULT_MODELS))
    store: str = "memory://"
    max_batch: int = 256
    max_delay_ms: float = 2.0
    timeout: float = 30.0
    token: str | None = None
    max_body_bytes: int = 16 * 1024 * 1024
    max_streams: int | None = None
    ttl: float | None = None
    threads: int | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @staticmethod
    def from_json(text: str) -> ServerConfig:
        return ServerConfig(**json.loads(text))


def _model_spec(spec: str) -> tuple[str, str]:
    """``name=source`` → (name, source); a bare source names itself (file stem or built-in name)."""
    if "=" in spec:
        name, source = spec.split("=", 1)
        if not name:
            raise InputError(f"model {spec!r}: the name before '=' is empty")
        return name, source
    if spec == "seed":
        return "seed", spec
    if spec.startswith(builtin.PREFIX):
        return spec.removeprefix(builtin.PREFIX), spec
    return Path(spec).stem, spec


def load_models(specs: list[str], threads: int | None = None) -> dict[str, StreamModel]:
    """Load every model of ``specs``: ``seed`` (bundled), ``builtin:NAME``, a file, or ``name=`` any of them.

    ``threads`` caps each model's engine threads (None: the backend's default, every core).
    """
    models: dict[str, StreamModel] = {}
    for spec in specs or DEFAULT_MODELS:
        name, source = _model_spec(spec)
        if name in models:
            raise InputError(f"two models are named {name!r}; name them with name=MODEL")
        if source == "seed":
            models[name] = load(SEED_MODEL)
        elif source.startswith(builtin.PREFIX):
            models[name] = builtin.build(source)
        else:
            models[name] = load(source)
        if threads is not None:
            models[name].set_backend("auto", threads=threads)
    return models
