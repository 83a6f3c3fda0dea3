"""gRPC: Triton's ``inference.GRPCInferenceService`` on ``grpc.aio``, beside HTTP, on the same event loop.

The servicer is the one tritonclient ships (``tritonclient.grpc.service_pb2_grpc``: generated from Triton's
own ``grpc_service.proto``, so the wire format is Triton's); every method here answers through the same
path as HTTP and WebSocket: the request is decoded into a StepRequest (rnnstream.server.grpc_codec) and
queued in the model's batcher, so batching, stores, exactly-once retries (``sequence_step``), limits and
metrics (``protocol="grpc"``) are the same, and a sequence started over one transport continues over
another.

``ModelStreamInfer`` is Triton's bidirectional stream: requests of any number of sequences, interleaved,
each answered as its step is done (not necessarily in order across sequences; in order within one),
with the request's ``id``. A failed request is answered with ``error_message`` (and its id), and the
stream stays open. At most ``max_grpc_inflight`` requests of one stream are being answered at once:
past that the stream is not read until one is (backpressure).

With a bearer token (``--token``), every call needs ``authorization: Bearer <token>`` metadata.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as rpc

from rnnstream import __version__
from rnnstream.errors import RnnstreamError
from rnnstream.server import model_versions
from rnnstream.server.asgi import bearer_matches
from rnnstream.server.grpc_codec import GrpcCall, infer_response, parse_infer, status_of
from rnnstream.server.metrics import labels_key
from rnnstream.server.oip import model_metadata
from rnnstream.server.refusals import status_for
from rnnstream.server.routes import EXTENSIONS
from rnnstream.server.served import ServedModel, ServerState
from rnnstream.server.triton_model import model_config, model_statistics
from rnnstream.step_request import Result

logger = logging.getLogger(__name__)
Context = Any
"""A ``grpc.aio.ServicerContext`` (grpc ships no type information)."""
GRACE_SECONDS = 5.0
"""How long calls in flight may finish when the server stops."""
LINGER_SECONDS = 0.5
"""After the streams it drained have ended, how long the server keeps their connections open before closing them:
a client still sending meanwhile reads the stream's status first, instead of losing it to a TCP reset."""
SHUTTING_DOWN = ("the server is shutting down: every request it read was answered; resend the others (with "
                 "sequence_step, safely) to another replica")


class InferenceService(rpc.GRPCInferenceServiceServicer):  # type: ignore[misc]  # generated: no types
    """Triton's gRPC inference service over the server's models."""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.answered = {name: labels_key(model=name, protocol="grpc", code="200") for name in state.models}
        self.readers: set[asyncio.Task[None]] = set()  # each open stream's reader
        self.open_streams = 0
        self.draining = False

    async def authorize(self, context: Context) -> None:
        token = self.state.config.token
        if token is None:
            return
        metadata = dict(context.invocation_metadata() or ())
        given = metadata.get("authorization", "")
        if not bearer_matches(given.encode() if isinstance(given, str) else given, token):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token "
                                "(metadata authorization: Bearer ...)")

    async def refuse(self, context: Context, error: Exception) -> None:
        code, message = status_of(error)
        await context.abort(code, message)

    # -- health and metadata -------------------------------------------------------------------------

    async def ServerLive(self, request: pb.ServerLiveRequest, context: Context) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: pb.ServerReadyRequest, context: Context) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.state.ready)

    async def ModelReady(self, request: pb.ModelReadyRequest, context: Context) -> pb.ModelReadyResponse:
        await self.authorize(context)
        await self.served(request.name, request.version, context)
        return pb.ModelReadyResponse(ready=self.state.ready)

    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: Context) -> pb.ServerMetadataResponse:
        await self.authorize(context)
        return pb.ServerMetadataResponse(name="rnnstream", version=__version__, extensions=[*EXTENSIONS, "grpc"])

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Context) -> pb.ModelMetadataResponse:
        await self.authorize(context)
        served = await self.served(request.name, request.version, context)
        metadata = model_metadata(served.name, served.model, list(self.state.versions[served.name]))
        del metadata["parameters"]  # the message has no field for them
        return json_format.ParseDict(metadata, pb.ModelMetadataResponse())

    async def ModelConfig(self, request: pb.ModelConfigRequest, context: Context) -> pb.ModelConfigResponse:
        await self.authorize(context)
        served = await self.served(request.name, request.version, context)
        config = json_format.ParseDict(model_config(self.state, served), mc.ModelConfig())
        return pb.ModelConfigResponse(config=config)

    async def ModelStatistics(
        self, request: pb.ModelStatisticsRequest, context: Context
    ) -> pb.ModelStatisticsResponse:
        await self.authorize(context)
        if request.name:
            await self.served(request.name, request.version, context)  # NOT_FOUND for a model not served
        statistics = model_statistics(self.state, request.name or None, request.version or None)
        return json_format.ParseDict(statistics, pb.ModelStatisticsResponse())

    async def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: Context
    ) -> pb.RepositoryIndexResponse:
        await self.authorize(context)
        entries = model_versions.index(self.state)
        if request.ready:
            entries = [entry for entry in entries if entry["state"] == "READY"]
        return json_format.ParseDict({"models": entries}, pb.RepositoryIndexResponse())

    async def RepositoryModelLoad(self, request: pb.RepositoryModelLoadRequest,
                                  context: Context) -> pb.RepositoryModelLoadResponse:
        await self.authorize(context)
        try:
            await model_versions.load(self.state, request.model_name)
        except RnnstreamError as error:
            await self.refuse(context, error)
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(self, request: pb.RepositoryModelUnloadRequest,
                                    context: Context) -> pb.RepositoryModelUnloadResponse:
        await self.authorize(context)
        given = request.parameters
        version = given["version"].string_param if "version" in given else None
        force = "force" in given and given["force"].bool_param
        try:
            await model_versions.unload(self.state, request.model_name, version or None, force)
        except RnnstreamError as error:
            await self.refuse(context, error)
        return pb.RepositoryModelUnloadResponse()

    async def served(self, name: str, version: str, context: Context) -> ServedModel:
        """The served model ``name`` (``version`` "" or "1"); NOT_FOUND otherwise."""
        try:
            return self.state.find(name, version or None)
        except RnnstreamError as error:
            await self.refuse(context, error)
            raise  # abort raised already: not reached

    # -- inference -------------------------------------------------------------------------------------

    async def ModelInfer(self, request: pb.ModelInferRequest, context: Context) -> pb.ModelInferResponse:
        await self.authorize(context)
        replied: asyncio.Future[pb.ModelInferResponse | Exception] = asyncio.get_running_loop().create_future()
        self.start(request, replied.set_result)
        reply = await replied
        if isinstance(reply, Exception):
            await self.refuse(context, reply)
        assert isinstance(reply, pb.ModelInferResponse)
        return reply

    async def ModelStreamInfer(self, requests: AsyncIterator[pb.ModelInferRequest],
                               context: Context) -> AsyncIterator[pb.ModelStreamInferResponse]:
        await self.authorize(context)
        if self.draining:
            await context.abort(grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN)
        call = StreamCall(self, self.state.config.max_grpc_inflight)
        reader = asyncio.get_running_loop().create_task(call.read(requests))
        self.readers.add(reader)
        reader.add_done_callback(call.ended)
        self.open_streams += 1  # until the call has ended, whatever ends it (not when this generator is closed)
        context.add_done_callback(self.stream_ended)
        try:
            while (reply := await call.replies.get()) is not None:
                yield reply
            if call.drained:  # every request read was answered; the client resends the rest elsewhere
                await context.abort(grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN)
            await reader  # a failure of the stream itself (the client's) ends the call with it
        finally:
            reader.cancel()

    def stream_ended(self, _: object) -> None:
        self.open_streams -= 1

    async def drain(self, timeout: float) -> None:
        """On shutdown: stop reading every stream, answer what was read, then end each stream UNAVAILABLE
        (within ``timeout`` seconds; then, if there were any, linger up to LINGER_SECONDS within it before the
        connections close, so clients still sending read that status); new streams are refused. Unary calls
        finish as they are."""
        self.draining = True
        for reader in list(self.readers):
            reader.cancel()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        drained_any = self.open_streams > 0
        while self.open_streams and loop.time() < deadline:
            await asyncio.sleep(0.01)
        if drained_any:
            await asyncio.sleep(max(0.0, min(LINGER_SECONDS, deadline - loop.time())))

    def start(self, request: pb.ModelInferRequest, done: Callable[[pb.ModelInferResponse | Exception], None]) -> None:
        """Decode ``request`` and queue its step; ``done`` gets the response when the step is done, or the
        error at once when the request is refused. Every outcome is counted."""
        name = request.model_name
        try:
            served = self.state.find(name, request.model_version or None)
            call = parse_infer(served.model, request, self.state.config)
            self.state.submit(served, call.step, lambda result: self.answer(served, call, result, done),
                              pinned=bool(request.model_version))
        except Exception as error:
            self.failed(name, error)
            done(error)

    def answer(self, served: ServedModel, call: GrpcCall, result: Result,
               done: Callable[[pb.ModelInferResponse | Exception], None]) -> None:
        """Encode the step's outputs (or hand on its error)."""
        if isinstance(result, Exception):
            self.failed(served.name, result)
            done(result)
            return
        try:
            response = infer_response(served.name, call, served.outputs_by_name(result))
        except Exception as error:  # a bug: logged, and answered INTERNAL
            self.failed(served.name, error)
            done(error)
            return
        self.state.metrics.requests.add(self.answered[served.name])
        done(response)

    def failed(self, name: str, error: Exception) -> None:
        if status_for(error) == 500:
            logger.error("a gRPC request for %r failed", name, exc_info=error)
        self.state.metrics.refused(name, "grpc", error)


class StreamCall:
    """One ``ModelStreamInfer`` call: requests are read while fewer than ``limit`` are being answered, and
    each is answered when its step is done."""

    def __init__(self, service: InferenceService, limit: int) -> None:
        self.service, self.limit = service, limit
        self.slots = asyncio.Semaphore(limit)
        self.replies: asyncio.Queue[pb.ModelStreamInferResponse | None] = asyncio.Queue()
        self.drained = False

    async def read(self, requests: AsyncIterator[pb.ModelInferRequest]) -> None:
        """Read and start every request; when the client is done sending, or the server drains (this task is
        cancelled), wait for every answer, then end the replies."""
        iterator = aiter(requests)
        try:
            more = True
            while more:
                more = await self.next(iterator)
        except asyncio.CancelledError:
            if not self.service.draining:
                raise  # the call was cancelled: nobody waits for the answers
            self.drained = True
        for _ in range(self.limit):
            await self.slots.acquire()
        self.replies.put_nowait(None)

    async def next(self, iterator: AsyncIterator[pb.ModelInferRequest]) -> bool:
        """Read and start one request once there is room (until then the stream is not read: backpressure);
        False when the client is done sending. A read cancelled midway started nothing."""
        await self.slots.acquire()
        try:
            request = await anext(iterator)
        except BaseException as end:
            self.slots.release()
            if isinstance(end, StopAsyncIteration):
                return False
            raise
        self.service.start(request, functools.partial(self.answered, request=request))
        return True

    def answered(self, reply: pb.ModelInferResponse | Exception, request: pb.ModelInferRequest) -> None:
        self.slots.release()
        self.replies.put_nowait(stream_reply(reply, request))

    def ended(self, reader: asyncio.Task[None]) -> None:
        """The reader is done; if it failed or was cancelled, the replies end too."""
        self.service.readers.discard(reader)
        if reader.cancelled() or reader.exception() is not None:
            self.replies.put_nowait(None)


def stream_reply(
    reply: pb.ModelInferResponse | Exception, request: pb.ModelInferRequest
) -> pb.ModelStreamInferResponse:
    """A stream's answer to ``request``: its response, or its error (with the request's model and id)."""
    if isinstance(reply, pb.ModelInferResponse):
        return pb.ModelStreamInferResponse(infer_response=reply)
    _, message = status_of(reply)
    identity = pb.ModelInferResponse(model_name=request.model_name, model_version=request.model_version, id=request.id)
    return pb.ModelStreamInferResponse(error_message=message, infer_response=identity)


class GrpcServer:
    """A running gRPC server: the port it listens on, and :meth:`stop`."""

    def __init__(self, server: grpc.aio.Server, service: InferenceService, port: int) -> None:
        self.server, self.service, self.port = server, service, port

    async def stop(self) -> None:
        """Drain every stream (answer what was read), then stop; calls still running after GRACE_SECONDS end."""
        await self.service.drain(GRACE_SECONDS)
        await self.server.stop(GRACE_SECONDS)


async def start_server(state: ServerState, address: str) -> GrpcServer:
    """Serve ``state``'s models over gRPC at ``address`` (``host:port``) on the running loop."""
    config = state.config
    options = [("grpc.max_receive_message_length", config.max_body_bytes), ("grpc.max_send_message_length", -1),
               ("grpc.so_reuseport", int(config.workers > 1))]  # else a second server would share the port
    server = grpc.aio.server(options=options)
    service = InferenceService(state)
    rpc.add_GRPCInferenceServiceServicer_to_server(service, server)
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as error:
        raise RnnstreamError(f"gRPC cannot listen on {address} ({error}): is the port in use? Choose another "
                             "with --grpc-port, or 0 for no gRPC") from None
    await server.start()
    return GrpcServer(server, service, port)
