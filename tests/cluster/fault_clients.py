"""Streams that step through HAProxy with ``sequence_step``, retrying on every error, and keep score.

Each stream sends step n (its inputs fixed by the stream's index and n) until it is acknowledged (200),
then n + 1. Any other answer — a 503, a 502 from HAProxy, a lost connection — is retried with the same
n (``retried``). A 409 whose ``expected_step`` is below n means the store lost acknowledged steps (a
Redis failover without durable acknowledgement): they are counted as ``lost`` and sent again from the
step the store expects, so the stream still ends equal to its replay. An ``expected_step`` above n would
be a step applied twice (``doubled``).
"""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass, field

import numpy as np

FEATURES = 4


def inputs(stream: int, steps: int) -> np.ndarray:
    """Stream ``stream``'s inputs for steps 1..steps: (steps, FEATURES)."""
    return np.random.default_rng(1000 + stream).normal(0, 1, (steps, FEATURES)).astype(np.float32)


@dataclass
class Score:
    acknowledged: int = 0
    retried: int = 0
    lost: int = 0
    doubled: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    examples: dict[str, str] = field(default_factory=dict)

    def error(self, kind: str, text: str) -> None:
        self.retried += 1
        self.errors[kind] = self.errors.get(kind, 0) + 1
        self.examples.setdefault(kind, text[:300])


class FaultClients:
    """``streams`` streams stepping through ``url`` until ``stop`` is set; ``outputs[k][n - 1]`` is the
    acknowledged output of stream k's step n."""

    def __init__(self, url: str, model: str, streams: int, max_steps: int) -> None:
        self.path, self.streams, self.max_steps = f"/v2/models/{model}/infer", streams, max_steps
        self.host, port = url.removeprefix("http://").split(":")
        self.port = int(port)
        self.xs = [inputs(k, max_steps) for k in range(streams)]
        self.outputs: list[list[float]] = [[] for _ in range(streams)]
        self.score = Score()
        self.stop = threading.Event()

    def body(self, k: int, n: int) -> dict[str, object]:
        return {"inputs": [{"name": "input", "shape": [1, FEATURES], "datatype": "FP32",
                            "data": self.xs[k][n - 1].tolist()}],
                "parameters": {"sequence_id": f"fault-{k}", "sequence_start": n == 1, "sequence_step": n}}

    async def post(self, connection: list[asyncio.StreamReader | asyncio.StreamWriter | None], body: bytes
                   ) -> tuple[int, bytes]:
        """One request on the stream's keep-alive connection (opened again when lost): (status, body).
        By hand: httpx's pool is too slow for 200 streams on 2 shared cores."""
        if connection[0] is None:
            connection[:] = await asyncio.open_connection(self.host, self.port)
        reader, writer = connection
        assert isinstance(reader, asyncio.StreamReader) and isinstance(writer, asyncio.StreamWriter)
        try:
            writer.write(f"POST {self.path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
                         f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
            length = int(head.split("content-length:")[1].split("\r\n")[0])
            reply = await reader.readexactly(length)
        except BaseException:
            writer.close()
            connection[:] = [None, None]
            raise
        if "connection: close" in head:
            writer.close()
            connection[:] = [None, None]
        return int(head.split()[1]), reply

    async def one(self, k: int) -> None:
        n, connection = 1, [None, None]
        while not self.stop.is_set() and n <= self.max_steps:
            try:
                status, text = await asyncio.wait_for(self.post(connection, json.dumps(self.body(k, n)).encode()), 30)
            except (TimeoutError, OSError, asyncio.IncompleteReadError, IndexError, ValueError) as error:
                self.score.error(type(error).__name__, str(error))
                await asyncio.sleep(0.05)
                continue
            reply = json.loads(text) if text.startswith(b"{") else {}
            if status == 200:
                del self.outputs[k][n - 1 :]  # a lost step sent again replaces its first answer
                self.outputs[k].append(float(reply["outputs"][0]["data"][0]))
                self.score.acknowledged += 1
                n += 1
            elif status == 409 and "expected_step" in reply:
                expected = int(reply["expected_step"])
                if expected >= n:
                    self.score.doubled += expected - n
                    return
                self.score.lost += n - expected
                n = expected
            elif status == 400 and "unknown sequence" in reply.get("error", ""):  # the store lost the whole stream
                self.score.lost += n - 1
                n = 1
            else:
                self.score.error(str(status), text.decode(errors="replace"))
                await asyncio.sleep(0.05)

    async def main(self) -> None:
        await asyncio.gather(*(self.one(k) for k in range(self.streams)))

    def run_in_thread(self) -> threading.Thread:
        thread = threading.Thread(target=lambda: asyncio.run(self.main()), daemon=True)
        thread.start()
        return thread
