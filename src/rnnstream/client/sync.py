"""The blocking client: :class:`Client` runs an :class:`~rnnstream.client.aio.AsyncClient` on an event loop of
its own, on a background thread, so its streams may be stepped from any number of threads at once and still
share one socket (their requests go together in frames)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from rnnstream.client.aio import AsyncClient, AsyncStream, Transport
from rnnstream.client.retry import ClientStats, RetryPolicy
from rnnstream.client.wire import Call
from rnnstream.errors import RnnstreamError
from rnnstream.types import Outputs

T = TypeVar("T")


class Client:
    """A blocking client of ``rnnstream serve`` at ``url`` (the arguments of :class:`AsyncClient`).

    Use it as ``with Client(url) as client:``, then ``client.stream(model, id)``; ``close()`` otherwise.
    """

    def __init__(self, url: str = "http://127.0.0.1:8000", *, transport: Transport = "websocket",
                 token: str | None = None, retry: RetryPolicy | None = None) -> None:
        self.aio = AsyncClient(url, transport=transport, token=token, retry=retry)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="rnnstream-client", daemon=True)
        self._thread.start()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def stats(self) -> ClientStats:
        """Requests answered, attempts, retries and reconnects so far."""
        return self.aio.stats

    def stream(self, model: str, sequence_id: str | int, *, next_step: int = 1) -> Stream:
        """Stream ``sequence_id`` of ``model`` (see :meth:`AsyncClient.stream`)."""
        return Stream(self, self.aio.stream(model, sequence_id, next_step=next_step))

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the client's loop and wait for its result."""
        if not self._thread.is_alive():
            coroutine.close()
            raise RnnstreamError("this Client is closed: make a new one (or use it in a `with` block)")
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def close(self) -> None:
        """Close the connections and stop the client's thread."""
        if self._thread.is_alive():
            self.run(self.aio.aclose())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()


class Stream:
    """One stream, blocking: the methods of :class:`~rnnstream.client.aio.AsyncStream`."""

    def __init__(self, client: Client, stream: AsyncStream) -> None:
        self.client, self.aio = client, stream

    def __repr__(self) -> str:
        return f"Stream({self.aio.model!r}, {self.aio.sequence_id!r}, next_step={self.aio.next_step})"

    @property
    def sequence_id(self) -> str:
        return self.aio.sequence_id

    @property
    def next_step(self) -> int:
        """The number of the stream's next step."""
        return self.aio.next_step

    @property
    def pending(self) -> Call | None:
        """The request a timeout left unknown, resent before the next one (None if there is none)."""
        return self.aio.pending

    def step(self, x: Any, *, end: bool = False) -> Outputs:
        """One step (see :meth:`AsyncStream.step`)."""
        return self.client.run(self.aio.step(x, end=end))

    def steps(self, xs: Any, *, end: bool = False) -> Outputs:
        """T steps at once, every step's outputs (see :meth:`AsyncStream.steps`)."""
        return self.client.run(self.aio.steps(xs, end=end))

    def end(self, x: Any) -> Outputs:
        """The last step: the server forgets the stream after it."""
        return self.client.run(self.aio.end(x))

    def retry(self) -> Outputs | None:
        """Resend the request a timeout left unknown; its outputs, or None if there is none."""
        return self.client.run(self.aio.retry())
