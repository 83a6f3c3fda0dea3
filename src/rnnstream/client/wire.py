"""What the client sends and reads: a model's tensors, one request (:class:`Call`), WebSocket binary frames and
Open Inference Protocol bodies (the formats of docs/formats.md#websocket-messages and docs/serving.md).

>>> model = ModelInfo.from_metadata({"name": "seed", "inputs": [{"name": "input", "datatype": "FP32",
...     "shape": [-1, 4]}], "outputs": [{"name": "output", "datatype": "FP32", "shape": [-1, 1]}]})
>>> call = Call(model, "sensor-1", 1, [np.zeros((1, 4), np.float32)], start=True)
>>> frame = encode_frame(model.name, [(7, call)])
>>> json.loads(frame[4 : 4 + int.from_bytes(frame[:4], "little")])["requests"][0]["sequence_step"]
1
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rnnstream.errors import InputError
from rnnstream.types import Array, FloatArray

_LENGTH = struct.Struct("<I")
HEADER_LENGTH = "Inference-Header-Content-Length"


@dataclass(frozen=True)
class TensorInfo:
    """One input or output of a served model: its name, OIP datatype and the shape of one step."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    @property
    def dtype(self) -> np.dtype[Any]:
        """How its values travel in a binary frame: int64 token ids, float32 otherwise."""
        return np.dtype("<i8") if self.datatype.startswith(("INT", "UINT")) else np.dtype("<f4")

    @property
    def size(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class ModelInfo:
    """A served model's inputs and outputs, read once from ``GET /v2/models/{name}``."""

    name: str
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]

    @classmethod
    def from_metadata(cls, body: Mapping[str, Any]) -> ModelInfo:
        def tensors(entries: Sequence[Mapping[str, Any]]) -> tuple[TensorInfo, ...]:  # shape [-1, *step]
            return tuple(TensorInfo(e["name"], e["datatype"], tuple(e["shape"][1:])) for e in entries)

        return cls(body["name"], tensors(body["inputs"]), tensors(body["outputs"]))

    @property
    def output_size(self) -> int:
        """float32 values of one step's outputs, all outputs together."""
        return sum(t.size for t in self.outputs)


@dataclass(frozen=True)
class Call:
    """One request: ``steps`` steps (1, or T for history priming) of stream ``sequence_id``, numbered from
    ``step``; ``inputs`` in the model's input order, each ``(steps, *shape)``. Resending a Call is exactly-once."""

    model: ModelInfo
    sequence_id: str
    step: int
    inputs: list[Array]
    start: bool = False
    end: bool = False
    primed: bool = False  # sent with a time axis ([1, T, *shape]), answered with every step's outputs

    @property
    def steps(self) -> int:
        return len(self.inputs[0])

    def parameters(self) -> dict[str, Any]:
        """The sequence parameters, as both transports name them."""
        found: dict[str, Any] = {"sequence_id": self.sequence_id, "sequence_step": self.step}
        if self.start:
            found["sequence_start"] = True
        if self.end:
            found["sequence_end"] = True
        if self.primed:
            found["sequence_outputs"] = "all"
        return found


def as_inputs(model: ModelInfo, x: Any, steps: int | None) -> list[Array]:
    """``x`` (one array for a one-input model, else a list in input order or a dict by name) as each input's
    values, ``(steps, *shape)`` in the input's dtype: one step when ``steps`` is None (then ``x`` has no time axis)."""
    names = [t.name for t in model.inputs]
    if isinstance(x, Mapping):
        if sorted(x) != sorted(names):
            raise InputError(f"model {model.name!r} takes inputs {names}; got {sorted(x)}")
        given = [x[name] for name in names]
    elif len(names) == 1:
        given = [x]
    elif isinstance(x, Sequence) and len(x) == len(names):
        given = list(x)
    else:
        raise InputError(f"model {model.name!r} takes {len(names)} inputs {names}: pass a list or a dict of them")
    found = []
    for info, value in zip(model.inputs, given, strict=True):
        array = np.asarray(value)
        want = info.shape if steps is None else (steps, *info.shape)
        if array.shape != want:
            what = "one step" if steps is None else f"{steps} steps"
            raise InputError(f"input {info.name!r} of {model.name!r}: {what} is shape {list(want)}, "
                             f"got {list(array.shape)}")
        found.append(np.ascontiguousarray(array, info.dtype).reshape(1 if steps is None else steps, *info.shape))
    return found


def encode_frame(model: str, calls: Sequence[tuple[int, Call]]) -> bytes:
    """A binary frame of single-step requests ``(id, call)``: header length, JSON header, each request's inputs."""
    header = {"model": model, "requests": [{"id": k, **c.parameters()} for k, c in calls]}
    head = json.dumps(header, separators=(",", ":")).encode()
    values = b"".join(x.tobytes() for _, call in calls for x in call.inputs)
    return _LENGTH.pack(len(head)) + head + values


def decode_frame_reply(data: bytes) -> tuple[list[dict[str, Any]], FloatArray]:
    """A binary reply: its responses (``id``, and ``error`` and ``code`` for a refused request) and the float32
    values of the answered ones' outputs, in order."""
    if len(data) < _LENGTH.size or _LENGTH.size + _LENGTH.unpack_from(data)[0] > len(data):
        raise ValueError(f"a binary answer of {len(data)} bytes is shorter than its header says")
    (length,) = _LENGTH.unpack_from(data)
    responses = json.loads(data[_LENGTH.size : _LENGTH.size + length])["responses"]
    return responses, np.frombuffer(data, "<f4", offset=_LENGTH.size + length)


def frame_outputs(responses: list[dict[str, Any]], values: FloatArray, size: int) -> list[FloatArray | None]:
    """Each response's ``size`` output values (one frame's requests are of one model), None for a refused one."""
    found: list[FloatArray | None] = []
    offset = 0
    for response in responses:
        if "error" in response:
            found.append(None)
        else:
            found.append(values[offset : offset + size])
            offset += size
    if offset != len(values):
        raise ValueError(f"a binary answer carries {len(values)} values; its requests' outputs are {offset}")
    return found


def split_outputs(model: ModelInfo, values: FloatArray, steps: int | None) -> list[FloatArray]:
    """One step's outputs (``steps`` None) or ``steps`` steps' outputs as one array per output."""
    found, offset = [], 0
    count = 1 if steps is None else steps
    for info in model.outputs:
        part = values[offset : offset + count * info.size]
        found.append(part.reshape(info.shape if steps is None else (steps, *info.shape)))
        offset += count * info.size
    return found


def infer_request(call: Call) -> tuple[bytes, dict[str, str]]:
    """An OIP infer request in the binary tensor extension: ``[1, *shape]`` per input (``[1, T, *shape]`` when
    primed), outputs asked in binary too; the body and its headers."""
    inputs = []
    for info, x in zip(call.model.inputs, call.inputs, strict=True):
        shape = [1, *x.shape] if call.primed else [1, *info.shape]
        inputs.append({"name": info.name, "shape": shape, "datatype": info.datatype,
                       "parameters": {"binary_data_size": x.nbytes}})
    header = json.dumps({"inputs": inputs, "parameters": {**call.parameters(), "binary_data_output": True}},
                        separators=(",", ":")).encode()
    headers = {HEADER_LENGTH: str(len(header)), "content-type": "application/octet-stream"}
    return header + b"".join(x.tobytes() for x in call.inputs), headers


def infer_reply(call: Call, body: bytes, header_length: str | None) -> list[FloatArray]:
    """The outputs of an OIP infer reply (binary outputs after a JSON header of ``header_length`` bytes, or JSON
    ``data``), in the model's output order."""
    length = len(body) if header_length is None else int(header_length)
    header = json.loads(body[:length])
    given: dict[str, FloatArray] = {}
    offset = length
    for entry in header["outputs"]:
        size = (entry.get("parameters") or {}).get("binary_data_size")
        if size is None:
            given[entry["name"]] = np.asarray(entry["data"], np.float32)
        else:
            given[entry["name"]] = np.frombuffer(body, "<f4", size // 4, offset)
            offset += size
    values = np.concatenate([given[t.name].reshape(-1) for t in call.model.outputs])
    return split_outputs(call.model, values, call.steps if call.primed else None)
