"""The Open Inference Protocol v2 (KServe / Triton) codec: requests, responses, metadata.

Tensors travel as JSON (``data``, ``shape``, ``datatype``) or in the binary tensor data extension:
the body is a JSON header of ``Inference-Header-Content-Length`` bytes followed by raw tensors, each
input naming its ``binary_data_size``. Triton's sequence extension puts ``sequence_id``,
``sequence_start`` and ``sequence_end`` in the request parameters; rnnstream adds ``sequence_step``
for exactly-once retries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from rnnstream.errors import RnnstreamError
from rnnstream.graph import InputSpec
from rnnstream.model import StreamModel
from rnnstream.stepping import StepRequest
from rnnstream.types import Array

HEADER_LENGTH = "Inference-Header-Content-Length"

DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(bool),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}


class ProtocolError(RnnstreamError, ValueError):
    """A request does not follow the protocol; the message names the field."""


@dataclass
class InferRequest:
    """A decoded infer request for one step of one sequence."""

    id: str | None
    step: StepRequest
    binary_outputs: bool
    requested: list[str] | None = None
    parameters: dict[str, Any] = field(default_factory=dict)


def _json_header(body: bytes, header_length: str | None) -> tuple[dict[str, Any], bytes]:
    if header_length is None:
        header_bytes, binary = body, b""
    else:
        try:
            size = int(header_length)
        except ValueError:
            raise ProtocolError(f"{HEADER_LENGTH} must be an integer, got {header_length!r}") from None
        if not 0 <= size <= len(body):
            raise ProtocolError(f"{HEADER_LENGTH} is {size}, but the body has {len(body)} bytes")
        header_bytes, binary = body[:size], body[size:]
    return json_object(header_bytes), binary


def json_object(body: bytes) -> dict[str, Any]:
    """A request body that must be one JSON object; anything else is a ProtocolError saying what it is.

    >>> json_object(b'{"a": 1}')
    {'a': 1}
    """
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ProtocolError(f"the request body must be a JSON object, got {type(data).__name__}")
    return data


def _tensor(entry: Any, binary: bytes, offset: int) -> tuple[str, Array, int]:
    """One input tensor; returns its name, its array and the offset of the next binary tensor."""
    if not isinstance(entry, dict):
        raise ProtocolError("each entry of 'inputs' must be an object with name, shape, datatype and data")
    name = entry.get("name")
    shape = entry.get("shape")
    datatype = entry.get("datatype")
    if not isinstance(name, str):
        raise ProtocolError("an input has no 'name'")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise ProtocolError(f"input {name!r}: 'shape' must be a list of non-negative integers, got {shape!r}")
    if datatype not in DATATYPES:
        raise ProtocolError(f"input {name!r}: datatype {datatype!r} is not supported; use one of {sorted(DATATYPES)}")
    dtype = DATATYPES[datatype]
    count = math.prod(shape)
    size = (entry.get("parameters") or {}).get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or size != count * dtype.itemsize or offset + size > len(binary):
            raise ProtocolError(
                f"input {name!r}: binary_data_size {size!r} does not fit shape {shape} of {datatype} "
                f"({count * dtype.itemsize} bytes) in the {len(binary) - offset} bytes left"
            )
        array = np.frombuffer(binary[offset : offset + size], dtype).reshape(shape)
        return name, array, offset + size
    if entry.get("data") is None:
        raise ProtocolError(f"input {name!r} has neither 'data' nor parameters.binary_data_size")
    try:
        array = np.asarray(entry["data"], dtype=dtype)
    except (TypeError, ValueError):
        raise ProtocolError(f"input {name!r}: 'data' is not a list of {datatype} numbers") from None
    if array.size != count:
        raise ProtocolError(f"input {name!r}: 'data' has {array.size} values, shape {shape} needs {count}")
    return name, array.reshape(shape), offset


def _one_step(name: str, array: Array, spec: InputSpec) -> Array:
    """A ``[1, *features]`` (or ``[*features]``) tensor → one step of one sequence."""
    features = spec.spec.shape
    if array.shape == (1, *features):
        return np.asarray(array[0])
    if array.shape == features:
        return array
    raise ProtocolError(
        f"input {name!r} has shape {list(array.shape)}; one step of one sequence is {[1, *features]}"
    )


def _sequence_id(parameters: dict[str, Any]) -> str:
    value = parameters.get("sequence_id")
    if value is None:
        raise ProtocolError(
            "this model is stateful: pass parameters.sequence_id (Triton's sequence extension) "
            "to say which stream the step belongs to"
        )
    if isinstance(value, bool) or not isinstance(value, int | str) or value in (0, ""):
        raise ProtocolError(f"parameters.sequence_id must be a non-zero integer or a non-empty string, got {value!r}")
    return str(value)


def _flag(parameters: dict[str, Any], key: str) -> bool:
    value = parameters.get(key, False)
    if not isinstance(value, bool):
        raise ProtocolError(f"parameters.{key} must be true or false, got {value!r}")
    return value


def parse_infer(model: StreamModel, body: bytes, header_length: str | None) -> InferRequest:
    """Decode an infer request for ``model``; ProtocolError names the field that is wrong."""
    header, binary = _json_header(body, header_length)
    parameters = header.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise ProtocolError("'parameters' must be an object")
    entries = header.get("inputs")
    if not isinstance(entries, list) or not entries:
        raise ProtocolError("'inputs' must be a non-empty list")
    tensors: dict[str, Array] = {}
    offset = 0
    for entry in entries:
        name, array, offset = _tensor(entry, binary, offset)
        tensors[name] = array
    specs = model.inputs
    if len(tensors) != len(specs) or any(spec.name not in tensors for spec in specs):
        names = {spec.name for spec in specs}
        unknown, missing = sorted(set(tensors) - names), sorted(names - set(tensors))
        raise ProtocolError(f"inputs: unknown {unknown}, missing {missing}; the model's inputs are {sorted(names)}")
    if len(specs) == 1:
        x: Any = _one_step(specs[0].name, tensors[specs[0].name], specs[0])
    else:
        x = {spec.name: _one_step(spec.name, tensors[spec.name], spec) for spec in specs}
    number = parameters.get("sequence_step")
    if number is not None and (isinstance(number, bool) or not isinstance(number, int) or number < 1):
        raise ProtocolError(f"parameters.sequence_step must be an integer from 1, got {number!r}")
    start = _flag(parameters, "sequence_start")
    request = StepRequest(
        stream_id=_sequence_id(parameters),
        x=x,
        step_number=number,
        start=start,
        end=_flag(parameters, "sequence_end"),
        must_exist=not start,
    )
    outputs = header.get("outputs")
    requested, binary_outputs = None, bool(parameters.get("binary_data_output", False))
    if outputs is not None:
        named = isinstance(outputs, list) and all(
            isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs
        )
        if not named:
            raise ProtocolError("'outputs' must be a list of objects with a 'name'")
        requested = [o["name"] for o in outputs]
        binary_outputs = binary_outputs or any((o.get("parameters") or {}).get("binary_data") for o in outputs)
    request_id = header.get("id")
    return InferRequest(str(request_id) if request_id is not None else None, request, binary_outputs, requested,
                        parameters)


def encode_infer(
    model_name: str, request: InferRequest, outputs: dict[str, Array]
) -> tuple[bytes, dict[str, str]]:
    """The response body and its extra headers (binary outputs add the header length)."""
    chosen = request.requested or list(outputs)
    unknown = sorted(set(chosen) - set(outputs))
    if unknown:
        raise ProtocolError(f"outputs: unknown {unknown}; the model's outputs are {sorted(outputs)}")
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
    parameters = {"sequence_id": request.parameters.get("sequence_id")}
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


def _datatype(dtype: str) -> str:
    return "INT64" if dtype == "int64" else "FP32"


def model_metadata(name: str, model: StreamModel) -> dict[str, Any]:
    """``GET /v2/models/{name}``: inputs and outputs with datatypes and shapes (-1 = the batch axis)."""
    return {
        "name": name,
        "versions": ["1"],
        "platform": "rnnstream",
        "inputs": [
            {"name": s.name, "datatype": _datatype(s.spec.dtype), "shape": [-1, *s.spec.shape]} for s in model.inputs
        ],
        "outputs": [
            {"name": n, "datatype": "FP32", "shape": [-1, *spec.shape]}
            for n, spec in zip(model.output_names, model.output_specs, strict=True)
        ],
        "parameters": {"sequence": True, "state_size": model.state_size, "fingerprint": model.fingerprint},
    }
