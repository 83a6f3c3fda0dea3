"""Triton's gRPC messages (KServe v2 + Triton's extensions) ↔ rnnstream's step requests and outputs.

An infer request carries its tensors in ``raw_input_contents`` (what tritonclient sends) or in each input's
typed ``contents``; its sequence in the parameters ``sequence_id`` (``int64_param``, ``uint64_param`` or
``string_param``), ``sequence_start`` / ``sequence_end`` (``bool_param``) and rnnstream's ``sequence_step``
(``int64_param``) and ``sequence_outputs`` (``string_param``, for a history of T steps: inputs
``[1, T, *features]``), exactly as over HTTP. Outputs go back as little-endian FP32 ``raw_output_contents``.
Every error is the same as over HTTP (rnnstream.server.refusals), as a gRPC status.

>>> import numpy as np, rnnstream
>>> from tritonclient.grpc import service_pb2 as pb
>>> from rnnstream.server.config import ServerConfig
>>> request = pb.ModelInferRequest(model_name="seed", id="r1")
>>> _ = request.inputs.add(name="input", datatype="FP32", shape=[1, 4])
>>> request.raw_input_contents.append(np.ones(4, "<f4").tobytes())
>>> request.parameters["sequence_id"].int64_param = 7
>>> request.parameters["sequence_start"].bool_param = True
>>> call = parse_infer(rnnstream.load(rnnstream.demo.SEED_MODEL), request, ServerConfig())
>>> call.step.stream_id, call.step.start, call.step.x.tolist()
('7', True, [1.0, 1.0, 1.0, 1.0])
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
from tritonclient.grpc import service_pb2 as pb

from rnnstream.model import StreamModel
from rnnstream.server.config import ServerConfig
from rnnstream.server.oip import check_id, step_request
from rnnstream.server.priming import all_outputs, request_inputs
from rnnstream.server.refusals import ProtocolError, outcome
from rnnstream.server.tensors import DATATYPES
from rnnstream.step_request import StepRequest
from rnnstream.types import Array

CONTENTS = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
            "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents",
            "UINT32": "uint_contents", "UINT64": "uint64_contents", "FP32": "fp32_contents",
            "FP64": "fp64_contents"}
"""The typed ``contents`` field of each datatype (FP16 travels in raw contents only)."""

STATUS_CODES = {400: grpc.StatusCode.INVALID_ARGUMENT, 401: grpc.StatusCode.UNAUTHENTICATED,
                404: grpc.StatusCode.NOT_FOUND, 405: grpc.StatusCode.UNIMPLEMENTED,
                409: grpc.StatusCode.FAILED_PRECONDITION, 413: grpc.StatusCode.RESOURCE_EXHAUSTED,
                429: grpc.StatusCode.RESOURCE_EXHAUSTED, 503: grpc.StatusCode.UNAVAILABLE,
                504: grpc.StatusCode.DEADLINE_EXCEEDED}
"""The gRPC status of each HTTP status an error has (rnnstream.server.refusals); a retryable 409 (a
conflict) is ABORTED, as gRPC advises for a retry at a higher level; anything else is INTERNAL."""


@dataclass
class GrpcCall:
    """A decoded gRPC infer request: its id, its step, and the outputs it asks for (None: all)."""

    id: str
    step: StepRequest
    requested: list[str] | None


def status_of(error: Exception) -> tuple[grpc.StatusCode, str]:
    """The gRPC status and message of ``error`` (a bug's message is not shown: it is logged).

    >>> from rnnstream.errors import ConflictError, StepOrderError
    >>> status_of(ProtocolError("bad"))
    (<StatusCode.INVALID_ARGUMENT: (3, 'invalid argument')>, 'bad')
    >>> status_of(ConflictError("again", stream_ids=["a"], applied={}))[0]
    <StatusCode.ABORTED: (10, 'aborted')>
    """
    answer = outcome(error)
    if answer.status == 500:
        return grpc.StatusCode.INTERNAL, "internal error (logged by the server); please report it"
    if answer.status == 409 and answer.retryable:
        return grpc.StatusCode.ABORTED, str(error)
    return STATUS_CODES.get(answer.status, grpc.StatusCode.INTERNAL), str(error)


def parse_infer(model: StreamModel, request: pb.ModelInferRequest, config: ServerConfig) -> GrpcCall:
    """Decode ``request`` for ``model``: ProtocolError names the field that is wrong. Everything is checked
    here, before the step is queued."""
    check_id(request.id, "id", config)
    x, steps = fast_step(model, request), None
    if x is None:
        x, steps = step_inputs(model, request, config.max_prime_steps)
    requested = [output.name for output in request.outputs] or None
    if requested is not None:
        unknown = sorted(set(requested) - set(model.output_names))
        if unknown:
            raise ProtocolError(f"outputs: unknown {unknown}; the model's outputs are {list(model.output_names)}")
    parameters = request.parameters
    outputs = all_outputs(string(parameters, "sequence_outputs"), steps, "parameters.sequence_outputs")
    step = step_request(sequence_id(parameters), flag(parameters, "sequence_start"), flag(parameters, "sequence_end"),
                        step_number(parameters), x, config, prefix="parameters.", steps=steps, all_outputs=outputs)
    return GrpcCall(request.id, step, requested)


def fast_step(model: StreamModel, request: pb.ModelInferRequest) -> Array | None:
    """The usual request decoded at once: the one FP32 input of a one-input model, one step of it, in raw
    contents (what tritonclient sends); None for anything else, which :func:`step_inputs` decodes."""
    specs, entries, raw = model.inputs, request.inputs, request.raw_input_contents
    if len(specs) != 1 or len(entries) != 1 or len(raw) != 1:
        return None
    spec, entry = specs[0], entries[0]
    features = spec.spec.shape
    if entry.datatype != "FP32" or spec.spec.dtype != "float32" or entry.name != spec.name or \
            len(raw[0]) != 4 * math.prod(features) or list(entry.shape) != [1, *features]:
        return None
    return np.frombuffer(raw[0], "<f4").reshape(features)


def step_inputs(model: StreamModel, request: pb.ModelInferRequest, max_steps: int) -> tuple[Any, int | None]:
    """One step (or T, rnnstream.server.priming) of each model input from the request's tensors (raw or typed
    contents, any datatype): an array for a one-input model, else a dict by input name; and T (None: one)."""
    specs = model.inputs
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise ProtocolError(f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs")
    given = {entry.name: (entry, k) for k, entry in enumerate(request.inputs)}
    names = {spec.name for spec in specs}
    if set(given) != names or len(given) != len(request.inputs):
        unknown, missing = sorted(set(given) - names), sorted(names - set(given))
        raise ProtocolError(f"inputs: unknown {unknown}, missing {missing}, each given once; the model's inputs "
                            f"are {sorted(names)}")
    tensors = {}
    for spec in specs:
        entry, k = given[spec.name]
        tensors[spec.name] = (tensor(entry, raw[k] if raw else None, f"inputs[{k}]"), entry.datatype, f"inputs[{k}]")
    return request_inputs(tensors, specs, max_steps)


def tensor(entry: pb.ModelInferRequest.InferInputTensor, raw: bytes | None, where: str) -> Array:
    """One input tensor as an array of its shape and datatype, from its raw bytes or its typed contents."""
    dtype = DATATYPES.get(entry.datatype)
    if dtype is None:
        raise ProtocolError(f"{where}.datatype: {entry.datatype!r} is not one rnnstream takes; "
                            f"one of {', '.join(DATATYPES)}")
    shape = list(entry.shape)
    count = math.prod(shape) if all(d >= 0 for d in shape) else -1
    if raw is not None:
        if count < 0 or len(raw) != count * dtype.itemsize:
            raise ProtocolError(f"raw_input_contents of {where}: {len(raw)} bytes do not fit shape {shape} of "
                                f"{entry.datatype} ({max(count, 0) * dtype.itemsize} bytes)")
        return np.frombuffer(raw, dtype).reshape(shape)
    field = CONTENTS.get(entry.datatype)
    if field is None:
        raise ProtocolError(f"{where}: {entry.datatype} tensors travel in raw_input_contents")
    values: Any = getattr(entry.contents, field)
    if count < 0 or len(values) != count:
        raise ProtocolError(f"{where}.contents.{field} has {len(values)} values; shape {shape} needs {max(count, 0)}")
    try:
        return np.array(values, dtype).reshape(shape)
    except OverflowError:
        raise ProtocolError(f"{where}.contents.{field}: a value is beyond {entry.datatype}'s range") from None


def sequence_id(parameters: Any) -> int | str | None:
    """The request's ``sequence_id`` parameter (Triton's: an int64, a uint64 or a string; 0 or "" is none)."""
    if "sequence_id" not in parameters:
        return None
    parameter = parameters["sequence_id"]
    kind = parameter.WhichOneof("parameter_choice")
    value: int | str
    if kind == "int64_param":
        number: int = parameter.int64_param
        if number < 0:
            raise ProtocolError(f"parameters.sequence_id: an integer id is an unsigned 64-bit one, got {number}")
        value = number
    elif kind == "uint64_param":
        value = parameter.uint64_param
    elif kind == "string_param":
        value = parameter.string_param
    else:
        raise ProtocolError(f"parameters.sequence_id: an integer or a string, got a {kind}")
    return value or None


def flag(parameters: Any, name: str) -> bool:
    """A boolean parameter (``sequence_start``, ``sequence_end``); False when absent."""
    if name not in parameters:
        return False
    parameter = parameters[name]
    if parameter.WhichOneof("parameter_choice") != "bool_param":
        raise ProtocolError(f"parameters.{name}: a bool_param")
    return bool(parameter.bool_param)


def string(parameters: Any, name: str) -> str | None:
    """A string parameter (``sequence_outputs``); None when absent."""
    if name not in parameters:
        return None
    parameter = parameters[name]
    if parameter.WhichOneof("parameter_choice") != "string_param":
        raise ProtocolError(f"parameters.{name}: a string_param")
    return str(parameter.string_param)


def step_number(parameters: Any) -> int | None:
    """rnnstream's ``sequence_step`` (≥ 1), for exactly-once retries; None when absent."""
    if "sequence_step" not in parameters:
        return None
    parameter = parameters["sequence_step"]
    kind = parameter.WhichOneof("parameter_choice")
    number: int | None = parameter.int64_param if kind == "int64_param" else \
        parameter.uint64_param if kind == "uint64_param" else None
    if number is None or number < 1:
        raise ProtocolError(f"parameters.sequence_step: an integer from 1, got {kind if number is None else number}")
    return int(number)


def infer_response(model_name: str, call: GrpcCall, outputs: dict[str, Array]) -> pb.ModelInferResponse:
    """The response to ``call``: each requested output as ``[1, *shape]`` FP32 in raw contents."""
    response = pb.ModelInferResponse(model_name=model_name, model_version="1", id=call.id)
    for name in call.requested or list(outputs):
        array = np.ascontiguousarray(outputs[name], dtype="<f4")
        response.outputs.add(name=name, datatype="FP32", shape=[1, *array.shape])
        response.raw_output_contents.append(array.tobytes())
    return response
