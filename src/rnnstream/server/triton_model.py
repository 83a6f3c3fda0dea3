"""What Triton's tools read of a served model: its configuration and its statistics, as Triton's JSON.

``GET /v2/models/{name}/config`` and the gRPC ``ModelConfig`` give the same document (Triton's
``ModelConfig`` message, JSON-encoded): each model takes one step of one sequence per request
(``max_batch_size`` 1, so dims are the feature shape and clients send ``[1, *dims]``), its sequences are
Triton's sequence batching (``max_sequence_idle_microseconds`` from ``--ttl``; the sequence id, start and
end travel as request parameters, so there are no control tensors), and steps of many sequences are
batched together, oldest first, each sequence's in order (the ``oldest`` strategy: ``--max-batch``,
``--max-delay-ms``, and ``--max-streams`` as the candidate sequences). Its ``parameters`` name the state's
size, the model's fingerprint and the precision its weights are served at (``--precision``).

``GET /v2/models[/{name}]/stats`` and gRPC ``ModelStatistics`` give Triton's statistics extension:
requests answered (success, fail), engine calls (execution_count), the time requests waited for their
engine call (queue) and the engine time by request (compute_infer). rnnstream does not time decoding and
encoding apart: compute_input and compute_output count requests with 0 ns.

>>> from rnnstream.server.config import ServerConfig
>>> from rnnstream.server.served import ServerState
>>> state = ServerState(ServerConfig(models=["seed"], ttl=60))
>>> config = model_config(state, state.find("seed"))
>>> config["input"], config["sequence_batching"]["max_sequence_idle_microseconds"]
([{'name': 'input', 'data_type': 'TYPE_FP32', 'dims': [4]}], 60000000)
>>> model_statistics(state, "seed")["model_stats"][0]["inference_count"]
0
"""

from __future__ import annotations

from typing import Any

from rnnstream.model import StreamModel
from rnnstream.server.served import ServedModel, ServerState

INT32_MAX = 2**31 - 1
IDLE_WITHOUT_TTL_US = 0
"""``max_sequence_idle_microseconds`` of a server without ``--ttl``: sequences never expire (Triton: 0 means its
default; rnnstream reports what it does)."""


def data_type(dtype: str) -> str:
    """Triton's data type of a model tensor of NumPy dtype ``dtype``: token ids are TYPE_INT64.

    >>> data_type("int64"), data_type("float32")
    ('TYPE_INT64', 'TYPE_FP32')
    """
    return "TYPE_INT64" if dtype == "int64" else "TYPE_FP32"


def tensors(model: StreamModel) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The model's inputs and outputs as Triton's ``ModelInput`` / ``ModelOutput`` (dims without the batch)."""
    inputs = [{"name": s.name, "data_type": data_type(s.spec.dtype), "dims": list(s.spec.shape)} for s in model.inputs]
    outputs = [{"name": name, "data_type": "TYPE_FP32", "dims": list(spec.shape)}
               for name, spec in zip(model.output_names, model.output_specs, strict=True)]
    return inputs, outputs


def model_config(state: ServerState, served: ServedModel) -> dict[str, Any]:
    """Triton's JSON model configuration of ``served``."""
    config = state.config
    inputs, outputs = tensors(served.model)
    idle = IDLE_WITHOUT_TTL_US if config.ttl is None else round(config.ttl * 1e6)
    return {
        "name": served.name,
        "platform": "rnnstream",
        "backend": "rnnstream",
        "version_policy": {"latest": {"num_versions": 1}},
        "max_batch_size": 1,
        "input": inputs,
        "output": outputs,
        "sequence_batching": {
            "max_sequence_idle_microseconds": idle,
            "oldest": {"max_candidate_sequences": min(config.max_streams or INT32_MAX, INT32_MAX),
                       "preferred_batch_size": [config.max_batch],
                       "max_queue_delay_microseconds": round(config.max_delay_ms * 1e3),
                       "preserve_ordering": True},
        },
        "parameters": {"state_size": {"string_value": str(served.model.state_size)},
                       "fingerprint": {"string_value": served.model.fingerprint},
                       "precision": {"string_value": precision(served.model)}},
    }


def precision(model: StreamModel) -> str:
    """The precision ``model``'s weights are served at: the mode its backend computes (``bf16`` is
    ``bf16-widen`` or ``bf16-dot`` in the fused kernel), else the one it was asked for.

    >>> from rnnstream.demo import builtin
    >>> precision(builtin.build("identity"))
    'fp32'
    """
    return str(getattr(model.backend, "precision", model.precision))


def model_statistics(state: ServerState, name: str | None = None, version: str | None = None) -> dict[str, Any]:
    """Triton's statistics of each version of model ``name`` (of ``version`` only; of every model when None)."""
    if name is None:
        served = [v for model in sorted(state.versions) for v in state.versions[model].values()]
    elif version is None:
        served = list(state.versions[state.find(name).name].values())
    else:
        served = [state.find(name, version)]
    return {"model_stats": [_statistics(v) for v in served]}


def _duration(count: float, seconds: float) -> dict[str, int]:
    return {"count": int(count), "ns": int(seconds * 1e9)}


def _statistics(served: ServedModel) -> dict[str, Any]:
    figures = served.batcher.statistics
    return {
        "name": served.name,
        "version": served.version,
        "last_inference": int(figures.last * 1e3),
        "inference_count": figures.success,
        "execution_count": figures.executions,
        "inference_stats": {
            "success": _duration(figures.success, figures.queue_seconds + figures.compute_seconds),
            "fail": _duration(figures.fail, 0.0),
            "queue": _duration(figures.queued, figures.queue_seconds),
            "compute_input": _duration(figures.queued, 0.0),
            "compute_infer": _duration(figures.queued, figures.compute_seconds),
            "compute_output": _duration(figures.queued, 0.0),
        },
        "batch_stats": [],
    }
