"""The gRPC load of ``rnnstream bench serve --protocols grpc``: Triton's ``ModelStreamInfer``, as Triton users
drive sequences, run by ``rnnstream.bench.load`` in its own process.

Sequences share streams: 20 per ``ModelStreamInfer`` call, 50 calls for 1,000 sequences (a call takes one
write at a time, so few calls bound the client: with 100 sequences per call the seed model carried 11,000
steps/s, with 20 14,800, with 10 or 4 13,300–13,500). Each sequence sends its next step when its previous
one has answered (closed loop), or on its schedule (open loop, ``rate`` steps/s, latency from the scheduled
time). Requests are built once per sequence and sent
with ``grpc.aio`` and the generated messages directly: tritonclient's stream client runs callbacks on
threads of its own, which would take more of the shared machine than the server's work per request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import grpc
import numpy as np
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as rpc

PER_STREAM = 20


def step_request(
    model: str, sequence: str, values: bytes, tensor: tuple[str, int], start: bool
) -> pb.ModelInferRequest:
    """One step of ``sequence`` (its FP32 values, raw, of input ``tensor``: name and features), with the
    sequence's id as the request id."""
    request = pb.ModelInferRequest(model_name=model, id=sequence)
    request.inputs.add(name=tensor[0], datatype="FP32", shape=[1, tensor[1]])
    request.raw_input_contents.append(values)
    request.parameters["sequence_id"].string_param = sequence
    if start:
        request.parameters["sequence_start"].bool_param = True
    return request


class SharedStream:
    """One ``ModelStreamInfer`` call carrying ``count`` sequences; answers are matched by request id."""

    def __init__(self, call: grpc.aio.StreamStreamCall, model: str, first: int, count: int,
                 tensor: tuple[str, int], latencies: list[float]) -> None:
        self.call, self.latencies, self.first = call, latencies, first
        values = np.full(tensor[1], 0.1, "<f4").tobytes()
        self.ids = [f"grpc-load-{k}" for k in range(first, first + count)]
        self.starts = [step_request(model, sequence, values, tensor, True) for sequence in self.ids]
        self.steps = [step_request(model, sequence, values, tensor, False) for sequence in self.ids]
        self.waiting: dict[str, asyncio.Future[None]] = {}
        self.writing = asyncio.Lock()  # a call takes one write at a time

    async def read(self) -> None:
        """Settle each answered step (an error ends the run: the load must be valid)."""
        async for reply in self.call:
            if reply.error_message:
                raise RuntimeError(f"the server refused a step: {reply.error_message}")
            self.waiting.pop(reply.infer_response.id).set_result(None)

    async def send(self, k: int, request: pb.ModelInferRequest) -> None:
        """Send sequence ``k``'s step and wait for its answer."""
        answered = asyncio.get_running_loop().create_future()
        self.waiting[self.ids[k]] = answered
        async with self.writing:
            await self.call.write(request)
        await answered

    async def drive(self, k: int, schedule: Iterator[float], rate: float) -> None:
        for due in schedule:
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            began = due if rate else time.perf_counter()
            await self.send(k, self.steps[k])
            self.latencies.append(time.perf_counter() - began)


async def grpc_load(
    address: str, model: str, streams: int, seconds: float, rate: float,
    schedule: Callable[[float, float, float, float], Iterator[float]],
) -> tuple[list[float], float]:
    """Drive ``streams`` sequences at ``address`` for ``seconds``; the latencies and the seconds it ran."""
    latencies: list[float] = []
    async with grpc.aio.insecure_channel(address) as channel:
        stub = rpc.GRPCInferenceServiceStub(channel)
        metadata = await stub.ModelMetadata(pb.ModelMetadataRequest(name=model))
        tensor = (metadata.inputs[0].name, int(metadata.inputs[0].shape[1]))
        shared = [SharedStream(stub.ModelStreamInfer(), model, first, min(PER_STREAM, streams - first), tensor,
                               latencies) for first in range(0, streams, PER_STREAM)]
        readers = [asyncio.ensure_future(stream.read()) for stream in shared]
        await asyncio.gather(*(stream.send(k, stream.starts[k]) for stream in shared for k in range(len(stream.ids))))
        started = time.perf_counter()
        end = started + seconds
        await asyncio.gather(*(stream.drive(k, schedule(started, end, rate, (stream.first + k) / streams), rate)
                               for stream in shared for k in range(len(stream.ids))))
        elapsed = time.perf_counter() - started
        for stream in shared:
            await stream.call.done_writing()
        await asyncio.gather(*readers)
    return latencies, elapsed
