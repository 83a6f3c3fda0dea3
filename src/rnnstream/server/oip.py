"""The Open Inference Protocol v2 (KServe / Triton) codec: requests, responses, metadata.

Tensors travel as JSON (``data``, ``shape``, ``datatype``) or in the binary tensor data extension:
the body is a JSON header of ``Inference-Header-Content-Length`` bytes followed by raw tensors, each
input naming its ``binary_data_size``. Triton's sequence extension puts ``sequence_id``,
``sequence_start`` and ``sequence_end`` in the request parameters; rnnstream adds ``sequence_step``
for exactly-once retries, and history priming (rnnstream.server.priming): inputs of shape
``[1, T, *features]`` step the sequence T times, ``sequence_outputs`` ``"all"`` answers every step's outputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from rnnstream.model import StreamModel
from rnnstream.server.priming import all_outputs, check_numbers, request_inputs
from rnnstream.server.refusals import LimitError, ProtocolError
from rnnstream.server.schema import InferenceRequest, InferParameters, decode
from rnnstream.server.tensors import spec_datatype, tensor
from rnnstream.step_request import StepRequest
from rnnstream.types import Array

if TYPE_CHECKING:
    from rnnstream.server.config import ServerConfig

HEADER_LENGTH = "Inference-Header-Content-Length"
UINT64_MAX = 2**64 - 1


@dataclass
class InferCall:
    """A decoded infer request: one step of one sequence, checked against the model and the limits."""

    id: str | None
    step: StepRequest
    binary_outputs: bool
    requested: list[str] | None
    sequence_id: int | str


def parse_infer(model: StreamModel, body: bytes, header_length: bytes | None, config: ServerConfig) -> InferCall:
    """Decode an infer request for ``model``: ProtocolError (400) names the field that is wrong, LimitError
    the limit a value goes past. Everything is checked here, before the step is queued."""
    if header_length is None:
        header, binary = body, b""
    else:
        if not header_length.isdigit() or not 0 <= int(header_length) <= len(body):
            raise ProtocolError(f"{HEADER_LENGTH} must be the length of the JSON header, an integer from 0 to "
                                f"{len(body)} (the body's length); got {header_length.decode('latin-1')!r}")
        header, binary = body[: int(header_length)], body[int(header_length) :]
    request = decode(InferenceRequest, header)
    specs = model.inputs
    tensors: dict[str, tuple[Array, str, str]] = {}
    offset = 0
    for k, entry in enumerate(request.inputs):
        array, offset = tensor(entry, f"$.inputs[{k}]", binary, offset)
        tensors[entry.name] = (array, entry.datatype, f"$.inputs[{k}]")
    if len(tensors) != len(specs) or any(spec.name not in tensors for spec in specs):
        names = {spec.name for spec in specs}
        unknown, missing = sorted(set(tensors) - names), sorted(names - set(tensors))
        raise ProtocolError(f"inputs: unknown {unknown}, missing {missing}; the model's inputs are {sorted(names)}")
    x, steps = request_inputs(tensors, specs, config.max_prime_steps)
    parameters = request.parameters or InferParameters()
    requested, binary_outputs = None, parameters.binary_data_output
    if request.outputs is not None:
        requested = [output.name for output in request.outputs]
        unknown = sorted(set(requested) - set(model.output_names))
        if unknown:
            raise ProtocolError(f"outputs: unknown {unknown}; the model's outputs are {list(model.output_names)}")
        binary_outputs = binary_outputs or any(o.parameters is not None and bool(o.parameters.binary_data)
                                               for o in request.outputs)
    check_id(request.id, "id", config)
    step = step_request(parameters.sequence_id, parameters.sequence_start, parameters.sequence_end,
                        parameters.sequence_step, x, config, prefix="parameters.", steps=steps,
                        all_outputs=all_outputs(parameters.sequence_outputs, steps, "parameters.sequence_outputs"))
    return InferCall(request.id, step, binary_outputs, requested, parameters.sequence_id or step.stream_id)


def check_id(value: int | str | None, field: str, config: ServerConfig) -> None:
    """An id (a request id, a sequence id; an integer by its digits) within ``max_id_length`` characters."""
    length = len(value) if isinstance(value, str) else len(str(value)) if isinstance(value, int) else 0
    if length > config.max_id_length:
        raise LimitError("max_id_length", length, config.max_id_length, f"characters in {field}")


def step_request(
    sequence_id: int | str | None,
    start: bool,
    end: bool,
    number: int | None,
    x: Any,
    config: ServerConfig,
    *,
    prefix: str = "",
    steps: int | None = None,
    all_outputs: bool = False,
) -> StepRequest:
    """The step of one sequence from Triton's sequence parameters (and rnnstream's ``sequence_step``);
    ``steps``: T for a history of T steps (``x`` holds them), ``all_outputs``: answer every step's outputs."""
    if isinstance(sequence_id, str):
        stream_id = sequence_id
    elif sequence_id is None:
        raise ProtocolError(
            f"this model is stateful: pass {prefix}sequence_id (Triton's sequence extension) "
            "to say which stream the step belongs to"
        )
    elif sequence_id > UINT64_MAX:
        raise ProtocolError(f"{prefix}sequence_id: an integer id is an unsigned 64-bit one (Triton's), up to "
                            f"{UINT64_MAX}; got {sequence_id}")
    else:
        stream_id = str(sequence_id)
    if len(stream_id) > config.max_id_length:
        check_id(stream_id, prefix + "sequence_id", config)
    if start and number is not None and number != 1:
        raise ProtocolError(f"{prefix}sequence_step: a start step is step 1, got {number}")
    if steps is not None:
        check_numbers(number, steps, prefix + "sequence_step")
    return StepRequest(stream_id, x, number, start, end, not start, steps, all_outputs)


def encode_infer(model_name: str, request: InferCall, outputs: dict[str, Array]) -> tuple[bytes, dict[str, str]]:
    """The response body and its extra headers (binary outputs add the header length); the outputs the
    request names were checked when it was decoded."""
    chosen = request.requested or list(outputs)
    entries, blobs = [], []
    for name in chosen:
        array = np.ascontiguousarray(outputs[name], dtype="<f4")[None]  # (1, *shape): one sequence
        entry: dict[str, Any] = {"name": name, "datatype": "FP32", "shape": list(array.shape)}
        if request.binary_outputs:
            blob = array.tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = array.reshape(-1).tolist()
        entries.append(entry)
    parameters: dict[str, Any] = {"sequence_id": request.sequence_id}
    if request.step.step_number is not None:
        parameters["sequence_step"] = request.step.step_number
    response: dict[str, Any] = {"model_name": model_name, "model_version": "1", "outputs": entries,
                                "parameters": parameters}
    if request.id is not None:
        response["id"] = request.id
    header = orjson.dumps(response)
    if not blobs:
        return header, {}
    return header + b"".join(blobs), {HEADER_LENGTH: str(len(header))}


def model_metadata(name: str, model: StreamModel, versions: list[str] | None = None) -> dict[str, Any]:
    """``GET /v2/models/{name}``: inputs and outputs with datatypes and shapes (-1 = the batch axis)."""
    return {
        "name": name,
        "versions": versions or ["1"],
        "platform": "rnnstream",
        "inputs": [
            {"name": s.name, "datatype": spec_datatype(s), "shape": [-1, *s.spec.shape]} for s in model.inputs
        ],
        "outputs": [
            {"name": n, "datatype": "FP32", "shape": [-1, *spec.shape]}
            for n, spec in zip(model.output_names, model.output_specs, strict=True)
        ],
        "parameters": {"sequence": True, "state_size": model.state_size, "fingerprint": model.fingerprint},
    }
