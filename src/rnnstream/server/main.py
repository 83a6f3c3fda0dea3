"""``rnnstream serve``: start uvicorn on the app, print the URLs and requests to paste."""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import shlex
import sys

import numpy as np

from rnnstream.errors import InputError, MissingDependencyError
from rnnstream.model import StreamModel
from rnnstream.server.app import CONFIG_ENV, create_app
from rnnstream.server.config import ServerConfig, load_models, sidecars
from rnnstream.server.process import tune_gc, tune_process


def example_request(url: str, name: str, model: StreamModel, token: str | None = None) -> str:
    """A curl command that starts a sequence with one step of zeros (with the bearer ``token``, if any).

    >>> from rnnstream.demo import builtin
    >>> print(example_request("http://h:1", "id", builtin.build("identity"), "s3cret"))  # doctest: +ELLIPSIS
    curl -s http://h:1/v2/models/id/infer -H 'Authorization: Bearer s3cret' -H 'Content-Type: ...' -d '{...}'
    """
    inputs = [
        {"name": s.name, "shape": [1, *s.spec.shape], "datatype": "INT64" if s.spec.dtype == "int64" else "FP32",
         "data": [0] * int(np.prod(s.spec.shape))}
        for s in model.inputs
    ]
    body = {"inputs": inputs, "parameters": {"sequence_id": "demo-1", "sequence_start": True}}
    return (f"curl -s {url}/v2/models/{name}/infer{_authorization(token)} -H 'Content-Type: application/json' "
            f"-d '{json.dumps(body)}'")


def example_generation(url: str, name: str, token: str | None = None) -> str:
    """A curl command that streams 200 tokens of a text model as Server-Sent Events (with the bearer
    ``token``, if any).

    >>> print(example_generation("http://127.0.0.1:8000", "text"))  # doctest: +NORMALIZE_WHITESPACE
    curl -sN http://127.0.0.1:8000/v2/models/text/generate_stream -d '{"text_input": "ROMEO.\\n",
      "parameters": {"max_tokens": 200, "temperature": 0.8}}'
    """
    body = {"text_input": "ROMEO.\n", "parameters": {"max_tokens": 200, "temperature": 0.8}}
    return f"curl -sN {url}/v2/models/{name}/generate_stream{_authorization(token)} -d '{json.dumps(body)}'"


def _authorization(token: str | None) -> str:
    """curl's Authorization header for ``token`` (shell-quoted), or nothing without one. The token is
    printed, as Jupyter prints its own: whoever reads the server's console started it with the token.

    >>> _authorization(None), _authorization("s3cret")
    ('', " -H 'Authorization: Bearer s3cret'")
    """
    return "" if token is None else f" -H {shlex.quote(f'Authorization: Bearer {token}')}"


def http_protocol() -> type[asyncio.Protocol] | str:
    """InferProtocol (rnnstream.server.protocol), which answers small infer requests without ASGI. It
    builds on uvicorn's httptools protocol (``uvicorn[standard]`` brings httptools): without it, or with
    a uvicorn whose protocol lacks a method InferProtocol builds on, uvicorn's own choice, and a warning.

    >>> http_protocol().__name__
    'InferProtocol'
    """
    return _protocol("rnnstream.server.protocol", "InferProtocol", "httptools",
                     "serving HTTP through plain uvicorn, which is slower")


def ws_protocol() -> type[asyncio.Protocol] | str:
    """DrainingWebSocket (rnnstream.server.ws_protocol), which answers what it has received before closing
    on SIGTERM; uvicorn's own choice, and a warning, when uvicorn's protocol lacks what it builds on.

    >>> ws_protocol().__name__
    'DrainingWebSocket'
    """
    return _protocol("rnnstream.server.ws_protocol", "DrainingWebSocket", "websockets",
                     "WebSocket connections close at once on SIGTERM")


def _protocol(module: str, name: str, package: str, fallback: str) -> type[asyncio.Protocol] | str:
    """Class ``name`` of ``module`` (a subclass of one of uvicorn's protocols), when it imports and the
    uvicorn it builds on has everything it relies on (``missing_hooks``); else uvicorn's own
    ("auto"), with a warning that says what is lost."""
    try:
        found = importlib.import_module(module)
    except ImportError as error:
        reason = f"{error}; pip install 'uvicorn[standard]' for {package}"
    else:
        missing = found.missing_hooks()
        if not missing:
            chosen: type[asyncio.Protocol] = getattr(found, name)
            return chosen
        reason = f"this uvicorn's protocol lacks {missing}"
    print(f"warning: {fallback} ({reason})", file=sys.stderr)
    return "auto"


def serve(config: ServerConfig, host: str, port: int, workers: int = 1) -> int:
    try:
        import uvicorn
    except ImportError:
        raise MissingDependencyError("the server needs its extra: pip install 'rnnstream[server]'") from None
    if workers > 1 and config.store == "memory://":
        raise InputError(
            "--workers > 1 needs a shared store: each worker would hold its own memory:// streams. "
            "Use --store redis://host:port/db"
        )
    tune_process()
    models = load_models(config.model_specs, config.threads, config.precision)
    url = f"http://{host}:{port}"
    print(f"rnnstream serving {', '.join(models)} at {url} (store {config.store}, "
          f"max batch {config.max_batch}, max delay {config.max_delay_ms:g} ms, {workers} worker(s)"
          + (f", {config.precision} weights)" if config.precision != "fp32" else ")"))
    print(f"Live page: {url}/" + (" (it asks for the bearer token)" if config.token else ""))
    if config.grpc_address is not None:
        print(f"gRPC (Triton's protocol): {config.grpc_address}")
    first = next(iter(models))
    examples = [example_request(url, first, models[first], config.token)]
    examples += [example_generation(url, name, config.token) for name, notes in sidecars(config.model_specs).items()
                 if name in models and "tokens" in notes][:1]
    print("Try:\n  " + "\n  ".join(examples), flush=True)
    # Float tensors barely compress: per-message deflate would only cost CPU. No access log and no
    # proxy-header rewriting either: per-request work whose result nothing here reads.
    options = {"host": host, "port": port, "log_level": "warning", "timeout_graceful_shutdown": 30,
               "ws_per_message_deflate": False, "access_log": False, "proxy_headers": False,
               "ws_max_size": config.max_body_bytes, "http": http_protocol(), "ws": ws_protocol()}
    if workers > 1:
        config.workers = workers
        os.environ[CONFIG_ENV] = config.to_json()
        uvicorn.run("rnnstream.server.app:app_from_env", factory=True, workers=workers, **options)  # type: ignore[arg-type]
    else:
        app = create_app(config, models)
        tune_gc()
        uvicorn.run(app, **options)  # type: ignore[arg-type]
    return 0
