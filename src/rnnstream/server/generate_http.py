"""Token streaming over HTTP, in the form of Triton's generate extension.

- ``POST /v2/models/{name}[/versions/1]/generate``: one JSON reply with the whole text.
- ``POST /v2/models/{name}[/versions/1]/generate_stream``: Server-Sent Events, one ``data: {...}`` event
  per token as it is sampled.

Request: ``{"text_input": "ROMEO.\\n", "parameters": {"max_tokens": 200, "temperature": 0.8, "top_k": 40,
"top_p": 0.95, "seed": 7, "stop": ["\\n\\n"]}}``, or ``"input_ids": [...]`` instead of ``text_input``, and an
optional ``"id"`` echoed in every reply. ``stop`` entries are text (a model with a vocabulary) or token ids;
a token or id ends the stream when sampled, longer text when the output ends with it.

Each event: ``{"model_name", "model_version", "index", "token_id", "text_output", "finish_reason"}``
(``text_output`` only for a model with a vocabulary; ``finish_reason`` is null until the last event:
``"stop"`` or ``"length"``; an error after the events began is a last event with ``"error"`` and
``"finish_reason": "error"``). ``/generate`` replies ``{"model_name", "model_version", "text_output",
"output_ids", "finish_reason"}``.

Every served token model has one :class:`~rnnstream.Generation`: all clients' streams share its steps,
one batched engine call per token, run on a worker thread. A client that disconnects cancels its stream.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, cast

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from rnnstream.errors import InputError, ModelFileError, RnnstreamError
from rnnstream.generation.engines import TokenModel
from rnnstream.generation.tokens import Generation, ReaderLagError, TokenEvent
from rnnstream.generation.vocab import Vocabulary
from rnnstream.model import StreamModel
from rnnstream.server import limits
from rnnstream.server.asgi import read_body
from rnnstream.server.config import ServerConfig
from rnnstream.server.metrics import Metrics
from rnnstream.server.oip import check_id
from rnnstream.server.refusals import (
    GenerationLimitError,
    LimitError,
    ProtocolError,
    error_body,
    status_for,
)
from rnnstream.server.schema import GenerateParameters, GenerateRequest, decode
from rnnstream.server.served import ServerState
from rnnstream.server.sse import EventStream, unless_disconnected

logger = logging.getLogger(__name__)
DEFAULT_MAX_TOKENS = 200


class ServedGeneration(Generation):
    """The Generation of one served token model; each token step is recorded in the server's metrics."""

    def __init__(self, model: StreamModel, name: str, metrics: Metrics) -> None:
        super().__init__(model)
        self.name, self.metrics = name, metrics

    def step(self) -> list[TokenEvent]:
        started = time.perf_counter()
        events = super().step()
        produced = sum(1 for e in events if e.error is None)
        if produced:
            self.metrics.token_step.observe(time.perf_counter() - started, model=self.name)
            self.metrics.token_batch.observe(produced, model=self.name)
            self.metrics.tokens.inc(produced, model=self.name)
        return events


class Token(NamedTuple):
    """One token of one request: its position, its id, and why the stream ends here (None: it goes on)."""

    position: int
    token_id: int
    finish: str | None


FINISH = {None: b"null", "stop": b'"stop"', "length": b'"length"'}


@dataclass(frozen=True)
class GenerateCall:
    """A checked request: the prompt's ids, the options of ``Generation.add`` and the text stop sequences."""

    prompt: list[int]
    options: dict[str, Any]
    stop_texts: tuple[str, ...] = ()
    request_id: str | None = None


@dataclass
class TokenService:
    """One served token model: its shared Generation and its vocabulary (None: it speaks token ids)."""

    name: str
    token_model: TokenModel
    generation: ServedGeneration
    vocabulary: Vocabulary | None
    max_tokens: int
    head: dict[str, str] = field(init=False)
    _event_head: bytes = field(init=False)
    _pieces: list[bytes] = field(init=False)

    def __post_init__(self) -> None:
        self.head = {"model_name": self.name, "model_version": "1"}
        self._event_head = b"data: " + json.dumps(self.head, separators=(",", ":")).encode()[:-1]
        tokens = self.vocabulary.tokens if self.vocabulary is not None else []
        self._pieces = [b',"text_output":' + json.dumps(t, ensure_ascii=False).encode() for t in tokens]

    def event(self, token: Token, request_id: bytes = b"") -> bytes:
        """The SSE event of ``token``, built from pieces encoded once (this runs for every token of every
        client); ``request_id`` is ``b',"id":"..."'`` or empty.

        >>> import rnnstream
        >>> model = rnnstream.load(rnnstream.demo.TEXT_MODEL)
        >>> generation = ServedGeneration(model, "text", Metrics())
        >>> service = TokenService("text", TokenModel(model), generation, rnnstream.demo.text_vocabulary(), 10)
        >>> event = service.event(Token(0, 48, "length"))
        >>> event[:6], json.loads(event[6:]), event[-2:]  # doctest: +NORMALIZE_WHITESPACE
        (b'data: ', {'model_name': 'text', 'model_version': '1', 'index': 0, 'token_id': 48, 'text_output': 'a',
                     'finish_reason': 'length'}, b'\\n\\n')
        """
        piece = self._pieces[token.token_id] if self._pieces else b""
        return (self._event_head + request_id + b',"index":%d,"token_id":%d' % (token.position, token.token_id)
                + piece + b',"finish_reason":' + FINISH[token.finish] + b"}\n\n")

    def parse(self, body: bytes, config: ServerConfig) -> GenerateCall:
        """Check a request body against this model and the server's limits; a bad field raises ProtocolError
        naming it, a value past a limit LimitError."""
        request = decode(GenerateRequest, body)
        check_id(request.id, "id", config)
        prompt = self._prompt(request, config)
        parameters = request.parameters or GenerateParameters()
        max_tokens = parameters.max_tokens if parameters.max_tokens is not None else \
            min(DEFAULT_MAX_TOKENS, config.max_tokens)
        limits.check("max_tokens", max_tokens, config.max_tokens)
        if parameters.top_k is not None and parameters.top_k > self.token_model.vocabulary:
            raise ProtocolError(f"parameters.top_k must be from 1 to the vocabulary's {self.token_model.vocabulary} "
                                f"tokens, got {parameters.top_k}")
        stop_ids, stop_texts = self._stops(parameters.stop, config)
        options = {"max_tokens": max_tokens, "temperature": parameters.temperature, "top_k": parameters.top_k,
                   "top_p": parameters.top_p, "seed": parameters.seed, "stop": stop_ids}
        return GenerateCall(prompt, options, stop_texts, request.id)

    def _prompt(self, request: GenerateRequest, config: ServerConfig) -> list[int]:
        if (request.text_input is None) == (request.input_ids is None):
            raise ProtocolError("give the prompt as text_input (a string) or input_ids (token ids), one of them")
        if request.text_input is not None:  # checked before it is encoded: a vocabulary's token is a character
            limits.check("max_prompt_tokens", len(request.text_input), config.max_prompt_tokens)
            if self.vocabulary is None:
                raise ProtocolError(f"model {self.name!r} has no vocabulary (no sidecar JSON with \"tokens\"): "
                                    "send the prompt as input_ids")
            try:
                ids = self.vocabulary.encode(request.text_input)
            except InputError as error:
                raise ProtocolError(f"text_input: {error}") from None
        else:
            assert request.input_ids is not None
            ids = request.input_ids
            limits.check("max_prompt_tokens", len(ids), config.max_prompt_tokens)
        top = self.token_model.input_vocabulary  # None: no Embedding bounds the ids
        if top is not None and (bad := [i for i in ids if i >= top]):
            raise ProtocolError(f"input_ids: token {bad[0]} is out of range; this model takes ids 0..{top - 1}")
        return ids

    def _stops(self, stop: Any, config: ServerConfig) -> tuple[list[int], tuple[str, ...]]:
        """Stop ids (sampled: the stream ends) and stop texts (the output ends with one: the stream ends)."""
        if stop is None:
            return [], ()
        entries = stop if isinstance(stop, list) else [stop]
        limits.check("max_stop", len(entries), config.max_stop)
        ids: list[int] = []
        texts: list[str] = []
        for entry in entries:
            if isinstance(entry, int) and entry < self.token_model.vocabulary:
                ids.append(entry)
            elif isinstance(entry, str) and self.vocabulary is not None:
                limits.check("max_stop_length", len(entry), config.max_stop_length)
                try:
                    encoded = self.vocabulary.encode(entry)
                except InputError as error:
                    raise ProtocolError(f"parameters.stop: {error}") from None
                if len(encoded) == 1:
                    ids.append(encoded[0])
                else:
                    texts.append(entry)
            else:
                what = "non-empty text or token ids" if self.vocabulary else "token ids (this model has no vocabulary)"
                raise ProtocolError(f"parameters.stop entries are {what} below {self.token_model.vocabulary}, "
                                    f"got {entry!r}")
        return ids, tuple(texts)

    async def stream(self, request: GenerateCall, max_buffer: int | None = None) -> AsyncGenerator[Token, None]:
        """The request's tokens as the shared Generation samples them; leaving early cancels the stream."""
        tail, keep = "", max((len(s) for s in request.stop_texts), default=0)
        stream = cast(AsyncGenerator[TokenEvent, None],
                      self.generation.stream(f"http-{uuid.uuid4().hex}", request.prompt, max_buffer=max_buffer,
                                             **request.options))
        async with contextlib.aclosing(stream):
            async for event in stream:
                finish = event.finish
                if keep and self.vocabulary is not None:
                    tail = (tail + self.vocabulary.tokens[event.token])[-keep:]
                    if finish is None and any(tail.endswith(s) for s in request.stop_texts):
                        finish = "stop"
                yield Token(event.position, event.token, finish)
                if finish is not None:
                    return


class TokenServices:
    """The token models of a server (models with one token-id input and one score per token out) and the
    limit on generations running at once."""

    def __init__(self, state: ServerState, sidecars: Mapping[str, Mapping[str, Any]]) -> None:
        self.state = state
        self.services: dict[str, TokenService] = {}
        self.limit = state.config.max_generations
        self.running = 0
        for name, served in state.models.items():
            try:
                tokens = TokenModel(served.model)
            except InputError:
                continue
            vocabulary = _vocabulary(name, tokens, sidecars.get(name, {}))
            generation = ServedGeneration(served.model, name, state.metrics)
            self.services[name] = TokenService(name, tokens, generation, vocabulary, state.config.max_tokens)
            state.metrics.generations[name] = generation.__len__

    def find(self, request: Request) -> TokenService:
        """The token model the path names; NotFoundError (a 404) for an unknown model, ProtocolError (a 400)
        for a served model that is not a token model: the request, not the path, is what cannot be answered."""
        name = request.path_params["name"]
        served = self.state.find(name, request.path_params.get("version"))
        service = self.services.get(served.name)
        if service is None:
            specs = ", ".join(f"{s.name} {s.spec.describe()}" for s in served.model.inputs)
            which = ", ".join(sorted(self.services)) or "none"
            raise ProtocolError(f"model {name!r} is not a token model (its inputs: {specs}); generate serves models "
                                f"with one input of token ids and one score per token out: {which}. Step this "
                                f"model with /v2/models/{name}/infer")
        return service

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of the ``max_generations`` places while a generation runs (GenerationLimitError if none)."""
        if self.running >= self.limit:
            raise GenerationLimitError(f"the server is generating {self.running} streams, its limit "
                                       f"(--max-generations {self.limit}); retry later")
        self.running += 1
        try:
            yield
        finally:
            self.running -= 1


def _vocabulary(name: str, tokens: TokenModel, sidecar: Mapping[str, Any]) -> Vocabulary | None:
    if "tokens" not in sidecar:
        return None
    vocabulary = Vocabulary(sidecar["tokens"])
    if len(vocabulary) != tokens.vocabulary:
        raise ModelFileError(f"model {name!r} scores {tokens.vocabulary} tokens but its sidecar vocabulary lists "
                             f"{len(vocabulary)}; they must match (token id i is tokens[i])")
    return vocabulary


# -- routes ------------------------------------------------------------------------------------------


def _services(request: Request) -> TokenServices:
    services: TokenServices = request.app.state.tokens
    return services


async def _parse(request: Request) -> tuple[TokenServices, TokenService, GenerateCall] | Response:
    """The services, the model's service and the checked request; or the error response to send."""
    services = _services(request)
    name = request.path_params["name"]
    try:
        service = services.find(request)
        body = await read_body(request, services.state.config.max_body_bytes)
        return services, service, service.parse(body, services.state.config)
    except RnnstreamError as error:  # a body too large is a 413 by status_for, like the rest
        return _failure(services, name, error)


def _failure(services: TokenServices, model: str, error: Exception) -> JSONResponse:
    services.state.metrics.refused(model, "generate", error)
    return JSONResponse(error_body(error), status_code=status_for(error))


def _error_event(services: TokenServices, service: TokenService, error: Exception) -> bytes:
    """The last event of a generation that failed after its events began (a status can no longer be sent)."""
    if isinstance(error, ReaderLagError):
        error = LimitError("max_sse_buffer", error.limit, error.limit, "token events left unread by this client",
                           429)
    elif not isinstance(error, RnnstreamError):
        logger.error("a generation of %r failed", service.name, exc_info=error)
    services.state.metrics.errors.inc(model=service.name, error=type(error).__name__)
    reply = {**service.head, **error_body(error), "finish_reason": "error"}
    return b"data: " + json.dumps(reply, ensure_ascii=False).encode() + b"\n\n"


async def generate(request: Request) -> Response:
    """``POST .../generate``: the whole generation in one reply."""
    parsed = await _parse(request)
    if isinstance(parsed, Response):
        return parsed
    services, service, generate_request = parsed

    async def collect() -> dict[str, Any]:
        ids: list[int] = []
        finish: str | None = None
        async with services.slot(), contextlib.aclosing(service.stream(generate_request)) as tokens:
            async for token in tokens:
                ids.append(token.token_id)
                finish = token.finish
        reply = {**service.head, "output_ids": ids, "finish_reason": finish}
        if service.vocabulary is not None:
            reply["text_output"] = service.vocabulary.decode(ids)
        if generate_request.request_id is not None:
            reply["id"] = generate_request.request_id
        return reply

    try:
        reply = await unless_disconnected(collect(), request.receive)
    except Exception as error:  # an engine error, or a bug (logged): a JSON error either way
        if not isinstance(error, RnnstreamError):
            logger.error("a generation of %r failed", service.name, exc_info=error)
        return _failure(services, service.name, error)
    if reply is None:  # the client left; nobody reads this
        return Response(status_code=204)
    services.state.metrics.requests.inc(model=service.name, protocol="generate", code="200")
    return JSONResponse(reply)


async def generate_stream(request: Request) -> Response:
    """``POST .../generate_stream``: Server-Sent Events, one per token."""
    parsed = await _parse(request)
    if isinstance(parsed, Response):
        return parsed
    services, service, generate_request = parsed
    if services.running >= services.limit:  # refuse with a status while one can still be sent
        return _failure(services, service.name, GenerationLimitError(
            f"the server is generating {services.running} streams, its limit (--max-generations "
            f"{services.limit}); retry later"))

    request_id = b"" if generate_request.request_id is None else \
        b',"id":' + json.dumps(generate_request.request_id, ensure_ascii=False).encode()

    async def events() -> AsyncGenerator[bytes, None]:
        buffer = services.state.config.max_sse_buffer
        try:
            async with services.slot(), contextlib.aclosing(service.stream(generate_request, buffer)) as tokens:
                async for token in tokens:
                    yield service.event(token, request_id)
        except Exception as error:  # every failure ends the stream with an error event, a bug's too
            yield _error_event(services, service, error)
            return
        services.state.metrics.requests.inc(model=service.name, protocol="generate", code="200")

    return EventStream(events())


def routes() -> list[Route]:
    """The generate routes, with and without ``/versions/{version}``."""
    found = []
    for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        found += [Route(prefix + "/generate", generate, methods=["POST"]),
                  Route(prefix + "/generate_stream", generate_stream, methods=["POST"])]
    return found
