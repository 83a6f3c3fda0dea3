"""Server-Sent Events, and cancelling work when the client disconnects.

>>> import asyncio
>>> async def stays() -> dict:  # a client that keeps the connection open
...     await asyncio.sleep(3600)
...     return {"type": "http.disconnect"}
>>> async def leaves() -> dict:  # a client that has gone
...     return {"type": "http.disconnect"}
>>> asyncio.run(unless_disconnected(asyncio.sleep(0.01, result="done"), stays))
'done'
>>> print(asyncio.run(unless_disconnected(asyncio.sleep(3600), leaves)))
None
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable
from typing import TypeVar

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

T = TypeVar("T")


class EventStream(Response):
    """Server-Sent Events (``data: ...\\n\\n`` each) from an async generator of encoded events. When the
    client disconnects, the generator is cancelled and closed at once (so the stream it reads stops), not
    at its next write."""

    media_type = "text/event-stream"

    def __init__(self, events: AsyncGenerator[bytes, None]) -> None:
        self.events = events
        self.status_code = 200
        self.background = None
        self.init_headers({"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})

        async def pump() -> None:
            async for event in self.events:
                await send({"type": "http.response.body", "body": event, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        try:
            await unless_disconnected(pump(), receive)
        finally:
            await self.events.aclose()


async def unless_disconnected(work: Awaitable[T], receive: Receive) -> T | None:
    """Await ``work`` unless the client disconnects first (``receive`` gives ``http.disconnect``): then
    cancel it and return None."""

    async def disconnected() -> None:
        message = await receive()
        while message["type"] != "http.disconnect":  # a body that was not read yet: skip it
            message = await receive()

    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait([task, watch], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for pending in (task, watch):
            pending.cancel()
        await asyncio.gather(task, watch, return_exceptions=True)
    if task.cancelled():
        return None
    return task.result()
