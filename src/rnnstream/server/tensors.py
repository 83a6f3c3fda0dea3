"""Tensors on the wire: a datatype's values from JSON or from binary data, as one step of a model input.

JSON values are decoded with the datatype's own type (``list[float]``; integers bounded by the
datatype's range; booleans), so ``300`` as ``UINT8``, ``1.5`` as ``INT64`` or ``"a"`` as ``FP32`` is a 400
naming the value's place, never a silent wrap-around. Nested lists are flattened in row-major order.
A tensor then becomes one step of one stream of its model input: shape ``[1, *features]`` (or
``[*features]``), cast to the input's dtype (float32, or int64 token ids, which only integer datatypes
may carry).

>>> from rnnstream.graph import InputSpec
>>> from rnnstream.layers.layer import TensorSpec
>>> values(Raw(b"[[1, 2], [3, 4]]"), "UINT8", "$.data")
[1, 2, 3, 4]
>>> values(Raw(b"[300]"), "UINT8", "$.data")
Traceback (most recent call last):
rnnstream.server.refusals.ProtocolError: Expected `int` <= 255 - at `$.data[0]`
>>> one_step(np.float32([[1, 2]]), InputSpec("x", TensorSpec((2,)), 0), "FP32").tolist()
[1.0, 2.0]
"""

from __future__ import annotations

import math
from typing import Annotated, Any

import msgspec
import numpy as np
from msgspec import Meta, Raw, UnsetType

from rnnstream.batch_inputs import cast_input
from rnnstream.graph import InputSpec
from rnnstream.server.refusals import ProtocolError
from rnnstream.server.schema import InferInput
from rnnstream.types import Array

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


def _element(dtype: np.dtype[Any]) -> Any:
    if dtype.kind == "b":
        return bool
    if dtype.kind == "f":
        return float
    info = np.iinfo(dtype)
    if info.max > 2**63 - 1:  # msgspec bounds fit in an int64: UINT64's top is checked by NumPy's conversion
        return Annotated[int, Meta(ge=0)]
    return Annotated[int, Meta(ge=int(info.min), le=int(info.max))]


_ELEMENTS = {name: _element(dtype) for name, dtype in DATATYPES.items()}
_FLAT = {name: msgspec.json.Decoder(list.__class_getitem__(element)) for name, element in _ELEMENTS.items()}
_NESTED = msgspec.json.Decoder(list[Any])


def values(raw: Raw, datatype: str, where: str) -> list[Any]:
    """The values of ``raw`` (a JSON list, flat or nested) as ``datatype``'s, flattened; ``where`` names
    the field in errors."""
    try:
        flat: list[Any] = _FLAT[datatype].decode(raw)
        return flat
    except msgspec.ValidationError as error:
        if not bytes(raw).lstrip().startswith(b"[["):
            message = str(error)
            raise ProtocolError(message.replace("`$", "`" + where) if "`$" in message else
                                f"{message} - at `{where}`") from None
    try:
        nested = _flatten(_NESTED.decode(raw))
        converted: list[Any] = msgspec.convert(nested, list.__class_getitem__(_ELEMENTS[datatype]))
        return converted
    except (msgspec.ValidationError, RecursionError) as error:
        raise ProtocolError(f"{where}: nested lists of {datatype} values, row-major ({error})") from None


def _flatten(items: list[Any]) -> list[Any]:
    flat: list[Any] = []
    for item in items:
        flat.extend(_flatten(item) if isinstance(item, list) else [item])
    return flat


def tensor(entry: InferInput, where: str, binary: bytes, offset: int) -> tuple[Array, int]:
    """One input tensor of an infer request as an array of its shape and datatype, and the offset of the
    next binary tensor (``binary``: the bytes after the JSON header)."""
    dtype = DATATYPES[entry.datatype]
    count = math.prod(entry.shape)
    size = entry.parameters.binary_data_size if entry.parameters is not None else None
    if size is not None:
        if size != count * dtype.itemsize or offset + size > len(binary):
            raise ProtocolError(
                f"{where}: binary_data_size {size} does not fit shape {entry.shape} of {entry.datatype} "
                f"({count * dtype.itemsize} bytes) in the {len(binary) - offset} bytes left"
            )
        return np.frombuffer(binary, dtype, count, offset).reshape(entry.shape), offset + size
    if isinstance(entry.data, UnsetType):
        raise ProtocolError(f"{where} has neither 'data' nor parameters.binary_data_size")
    found = values(entry.data, entry.datatype, where + ".data")
    if len(found) != count:
        raise ProtocolError(f"{where}.data has {len(found)} values; shape {entry.shape} needs {count}")
    try:
        return np.array(found, dtype).reshape(entry.shape), offset
    except OverflowError:
        raise ProtocolError(f"{where}.data: a value is beyond {entry.datatype}'s range") from None


def one_step(array: Array, spec: InputSpec, datatype: str) -> Array:
    """A ``[1, *features]`` (or ``[*features]``) tensor as one step of input ``spec``, in its dtype."""
    features = spec.spec.shape
    if array.shape == (1, *features):
        array = array[0]
        if datatype == "FP32" and spec.spec.dtype == "float32":  # the usual case: nothing to cast or check
            return array
    elif array.shape != features:
        raise ProtocolError(
            f"input {spec.name!r} has shape {list(array.shape)}; one step of one sequence is {[1, *features]}"
        )
    return cast_input(spec, array)  # token ids from integer datatypes only, real numbers from numeric ones


def spec_datatype(spec: InputSpec) -> str:
    """The datatype a model input is described with: INT64 for token ids, FP32 otherwise."""
    return "INT64" if spec.spec.dtype == "int64" else "FP32"


def step_values(raw: Raw, spec: InputSpec, where: str) -> Array:
    """One step of input ``spec`` from plain JSON values (the WebSocket's ``inputs``): numbers of the
    input's shape (nested or flat), integers for token ids."""
    datatype = spec_datatype(spec)
    found = values(raw, datatype, where) if bytes(raw).lstrip().startswith(b"[") else \
        values(Raw(b"[" + bytes(raw) + b"]"), datatype, where)  # a bare token id
    count = math.prod(spec.spec.shape)
    if len(found) != count:
        raise ProtocolError(f"{where} has {len(found)} values; input {spec.name!r} takes {count} per step "
                            f"(shape {list(spec.spec.shape)})")
    return one_step(np.array(found, DATATYPES[datatype]).reshape(spec.spec.shape), spec, datatype)
