"""Loading and unloading model versions while the server runs (Triton's repository extension).

**Load** (``POST /v2/repository/models/{name}/load``, gRPC ``RepositoryModelLoad``) loads model ``name``'s
newest version from the model repository (``--model-repository``) and serves it as the model's newest:
new streams start on it, while the streams of older versions keep stepping on the version their state
belongs to until they end (rnnstream.server.served: ``ServerState.submit``). A version must take and give
what the served one does (input names, shapes and types, output names and shapes): a model with other
inputs is another model, under another name. Loading a version that is served already does nothing.

**Unload** (``…/unload``, gRPC ``RepositoryModelUnload``) stops serving one version (parameter
``version``) or every version of a repository model (the models named on the command line stay); a
version that still holds live streams is refused (409) unless the parameter ``force`` is true, which
drops its streams.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from rnnstream.model import StreamModel
from rnnstream.server.config import load_models
from rnnstream.server.refusals import ModelInUseError, ProtocolError
from rnnstream.server.repository import names, newest, versions
from rnnstream.server.served import ServedModel, ServerState


async def load(state: ServerState, name: str) -> ServedModel:
    """Serve model ``name``'s newest version from the repository (see the module docstring)."""
    root = state.config.model_repository
    if root is None:
        return state.find(name)  # served from the start: loaded; any other name is a 404
    single_process(state, "load")
    if name not in names(Path(root)):  # a model named on the command line is loaded; any other is a 404
        return state.find(name)
    number, path = newest(Path(root), name)  # a version folder without one model file: InputError (400)
    version = str(number)
    if version in state.versions.get(name, {}):
        return state.versions[name][version]
    model = (await asyncio.to_thread(load_models, [f"{name}={path}"], state.config.threads,
                                     state.config.precision))[name]
    if name in state.models:
        check_compatible(name, version, state.models[name], model)
    served = state.serve(name, model, version)
    served.batcher.start()
    state.add(served)
    return served


def single_process(state: ServerState, what: str) -> None:
    """Refuse to change the served versions of one of several worker processes: a request reaches one of
    them, and the others would go on serving what they serve (restart them to serve a new version)."""
    if state.config.workers > 1:
        raise ProtocolError(f"cannot {what} a model version in a server of {state.config.workers} worker "
                            "processes: a request reaches one of them. Restart the server to serve the "
                            "repository's newest versions, or run single-process replicas behind a load balancer")


def check_compatible(name: str, version: str, served: ServedModel, model: StreamModel) -> None:
    """Refuse a version whose inputs or outputs differ from the served version's."""
    def signature(m: StreamModel) -> tuple[object, ...]:
        inputs = [(s.name, s.spec.shape, s.spec.dtype) for s in m.inputs]
        return tuple(inputs), m.output_names, tuple(spec.shape for spec in m.output_specs)

    if signature(model) != signature(served.model):
        raise ProtocolError(
            f"version {version} of model {name!r} has inputs/outputs {signature(model)}, version {served.version} "
            f"has {signature(served.model)}: a model with other inputs or outputs is another model; give it "
            "another name in the repository"
        )


async def unload(state: ServerState, name: str, version: str | None = None, force: bool = False) -> list[str]:
    """Stop serving ``version`` of model ``name`` (every version when None); returns the versions unloaded."""
    targets = [state.find(name, version)] if version is not None else \
        list(state.versions.get(state.find(name).name, {}).values())
    root = state.config.model_repository
    single_process(state, "unload")
    if root is None or name not in names(Path(root)):
        raise ProtocolError(f"model {name!r} cannot be unloaded: it is not from the model repository "
                            "(--model-repository); the server serves the models it started with until it stops")
    if not force:
        live = {t.version: await asyncio.to_thread(len, t.streams) for t in targets}
        busy = {v: n for v, n in live.items() if n}
        if busy:
            held = ", ".join(f"version {v}: {n}" for v, n in sorted(busy.items()))
            raise ModelInUseError(f"model {name!r} still has live streams ({held}); they step until they end. "
                                  "Unload once they have, or pass the parameter force: true to drop them")
    for served in targets:
        state.remove(served)
        await served.batcher.close()
        served.streams.close_store()
    return [served.version for served in targets]


def index(state: ServerState) -> list[dict[str, Any]]:
    """Every model version served (READY), and each repository version that is not (UNAVAILABLE)."""
    entries = {(name, version): "READY" for name, served in state.versions.items() for version in served}
    root = state.config.model_repository
    if root is not None:
        for name in names(Path(root)):
            for number in versions(Path(root), name):
                entries.setdefault((name, str(number)), "UNAVAILABLE")
    return [{"name": name, "version": version, "state": status}
            for (name, version), status in sorted(entries.items(), key=lambda e: (e[0][0], int(e[0][1])))]
