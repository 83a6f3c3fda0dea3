"""The wire types of every request the server takes, decoded and checked in one pass by msgspec.

A body that does not fit its type is a 400 whose message names the field (``$.inputs[0].datatype``); the
checks that depend on the model or the server's limits follow in the codecs (``oip``, ``ws``,
``generate``, ``forecast``). The same types give the OpenAPI document (``openapi.py``).

msgspec was chosen over pydantic and over the hand-written parser it replaced by measuring the decode of
a one-step seed request (this Zen 4, one core): msgspec 1.5 µs, pydantic 4.0 µs, the hand-written parser
5.5 µs.

>>> body = b'{"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}'
>>> request = decode(InferenceRequest, body)
>>> request.inputs[0].datatype, bytes(request.inputs[0].data)
('FP32', b'[1, 2]')
>>> decode(InferenceRequest, b'{"inputs": [{"name": "x", "shape": [1], "datatype": ["FP32"]}]}')
Traceback (most recent call last):
rnnstream.server.refusals.ProtocolError: Expected `str`, got `array` - at `$.inputs[0].datatype`
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

import msgspec
from msgspec import UNSET, Meta, Raw, Struct, UnsetType

from rnnstream.server.refusals import ProtocolError

T = TypeVar("T")

Datatype = Literal["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32",
                   "FP64"]
SequenceId = Annotated[int, Meta(ge=1)] | Annotated[str, Meta(min_length=1)]
"""Triton's sequence id: a non-zero integer (Triton's are unsigned 64-bit ones), or a non-empty string; its
length is bounded by ``max_id_length`` (``oip.check_id``)."""
StepNumber = Annotated[int, Meta(ge=1, le=2**63 - 1)]
SequenceOutputs = Annotated[Literal["last", "all"], Meta(description=(
    'a request of T steps (history priming: inputs [1, T, *features]): "last" answers the last step\'s outputs, '
    '"all" every step\'s, [1, T, *shape]'))]
Int64 = Annotated[int, Meta(ge=-(2**63), le=2**63 - 1)]
Seed = Annotated[int, Meta(ge=0, le=2**63 - 1)]
Count = Annotated[int, Meta(ge=1, le=2**63 - 1)]
VALUES = Annotated[Raw, Meta(extra_json_schema={
    "type": "array", "description": "the tensor's values in row-major order (flat or nested lists)"})]


class TensorParameters(Struct):
    binary_data_size: Annotated[int, Meta(ge=0)] | None = None
    binary_data: bool | None = None


class InferInput(Struct):
    """One input tensor: values in ``data`` (JSON) or ``parameters.binary_data_size`` bytes after the header."""

    name: str
    shape: list[Annotated[int, Meta(ge=0, le=2**31)]]
    datatype: Datatype
    data: VALUES | UnsetType = UNSET
    parameters: TensorParameters | None = None


class RequestedOutput(Struct):
    name: str
    parameters: TensorParameters | None = None


class InferParameters(Struct):
    """Triton's sequence extension, rnnstream's ``sequence_step`` and ``sequence_outputs`` (a request of T
    steps, inputs ``[1, T, *features]``: ``"last"`` answers the last step's outputs, ``"all"`` every step's,
    ``[1, T, *shape]``); other parameters are accepted and ignored."""

    sequence_id: SequenceId | None = None
    sequence_start: bool = False
    sequence_end: bool = False
    sequence_step: StepNumber | None = None
    sequence_outputs: SequenceOutputs = "last"
    binary_data_output: bool = False


class InferenceRequest(Struct):
    """``POST /v2/models/{name}/infer``: one step of one sequence (the Open Inference Protocol v2)."""

    inputs: Annotated[list[InferInput], Meta(min_length=1, max_length=64)]
    id: str | None = None
    parameters: InferParameters | None = None
    outputs: Annotated[list[RequestedOutput], Meta(max_length=64)] | None = None


class StreamStep(Struct):
    """One request of a WebSocket message: a step of ``sequence_id`` of ``model``."""

    sequence_id: SequenceId
    inputs: Annotated[Raw, Meta(extra_json_schema={
        "description": "the step's inputs: a list for a one-input model, or {input name: values}"})] | UnsetType = UNSET
    model: str | None = None
    id: str | Int64 | None = None
    sequence_start: bool = False
    sequence_end: bool = False
    sequence_step: StepNumber | None = None
    steps: Annotated[int, Meta(ge=1, le=2**31, description="history priming: the request's values are this many "
                                                             "steps (at most max_prime_steps)")] | None = None
    sequence_outputs: SequenceOutputs = "last"


class StreamMessage(Struct):
    """A WebSocket text message: one step (the fields of StreamStep) or ``{"requests": [...]}``. Each request
    is decoded on its own, so one malformed request fails alone."""

    requests: list[Raw] | None = None
    model: str | None = None
    id: str | Int64 | None = None


class FrameHeader(Struct):
    """The JSON header of a binary WebSocket frame; the values follow it."""

    requests: list[Raw]
    model: str | None = None


class FrameSteps(Struct):
    """A frame header whose requests all decode: one decoder call for all of them (``FrameHeader`` then
    decodes a header with a malformed request one request at a time, so that it fails alone)."""

    requests: list[StreamStep]
    model: str | None = None


StopEntry = Annotated[str, Meta(min_length=1)] | Annotated[int, Meta(ge=0)]


class GenerateParameters(Struct, forbid_unknown_fields=True):
    max_tokens: Count | None = None
    temperature: Annotated[float, Meta(ge=0)] = 1.0
    top_k: Count | None = None
    top_p: Annotated[float, Meta(gt=0, le=1)] | None = None
    seed: Seed | None = None
    stop: StopEntry | list[StopEntry] | None = None


class GenerateRequest(Struct, forbid_unknown_fields=True):
    """``POST /v2/models/{name}/generate[_stream]``: a prompt as text or token ids, and sampling parameters."""

    text_input: Annotated[str, Meta(min_length=1)] | None = None
    input_ids: Annotated[list[Annotated[int, Meta(ge=0, le=2**63 - 1)]], Meta(min_length=1)] | None = None
    parameters: GenerateParameters | None = None
    id: str | None = None


Rows = list[list[float]]
Feedback = Annotated[int, Meta(ge=0)] | list[Annotated[int, Meta(ge=0)]] | dict[str, Annotated[int, Meta(ge=0)]]


class ForecastRequest(Struct, forbid_unknown_fields=True):
    """``POST /v2/models/{name}/forecast``: a forecast from a live stream's state, on a copy."""

    sequence_id: SequenceId
    horizon: Count
    noise: Annotated[float, Meta(ge=0)] | list[Annotated[float, Meta(ge=0)]] | None = None
    paths: Count | None = None
    seed: Seed | None = None
    exogenous: Rows | dict[str, Rows] | None = None
    feedback: dict[str, Feedback] | None = None
    quantiles: list[Annotated[float, Meta(ge=0, le=1)]] | None = None


class RepositoryParameters(Struct):
    """Parameters of a repository load or unload (Triton's others, such as ``unload_dependents``, are
    taken and have no effect)."""

    version: str | None = None
    force: bool = False


class RepositoryRequest(Struct):
    """The body of ``POST /v2/repository/models/{name}/load`` or ``…/unload`` (may be empty)."""

    parameters: RepositoryParameters | None = None


class ErrorReply(Struct):
    """Every error: the message names the field, the value and the limit."""

    error: str
    expected_step: int | None = None
    limit: dict[str, Any] | None = None
    retryable: bool | None = None


_DECODERS: dict[type, msgspec.json.Decoder[Any]] = {}


def decode(kind: type[T], data: bytes | str) -> T:
    """``data`` as a ``kind``; ProtocolError (a 400) names the first field that does not fit."""
    decoder = _DECODERS.get(kind)
    if decoder is None:
        decoder = _DECODERS[kind] = msgspec.json.Decoder(kind)
    try:
        result: T = decoder.decode(data)
    except msgspec.ValidationError as error:
        message = str(error)
        raise ProtocolError(message if "`$" in message else f"{message} - at `$`") from None
    except msgspec.DecodeError as error:
        raise ProtocolError(f"the request is not valid JSON: {error}") from None
    return result
