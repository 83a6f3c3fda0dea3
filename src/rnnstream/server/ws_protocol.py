"""WebSocket for the server: uvicorn's sans-I/O websockets protocol, draining on SIGTERM.

On SIGTERM uvicorn's protocol sends a Close frame (1012, service restart) and closes the connection at
once, so the answers to messages the app has received and not yet answered are lost: steps applied,
never acknowledged. :class:`DrainingWebSocket` stops reading the socket instead and tells the app
(a ``websocket.disconnect`` with code 1012 after the messages already received); the app answers those,
then closes with 1012 itself (``ws.StreamSocket``). What the client sent after that was never read: it
sees the close code and resends those steps to another replica (with ``sequence_step``, safely).
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from rnnstream.server.uvicorn_shape import Reliance, missing

UVICORN_HOOKS = ("shutdown", "receive", "stop_keepalive")
"""The methods of uvicorn's protocol that DrainingWebSocket overrides or calls (uvicorn's internals)."""
UVICORN_STATE = ("queue", "read_paused", "handshake_complete", "initial_response", "close_sent", "transport")
"""The attributes of uvicorn's protocol it reads or writes."""

SERVICE_RESTART = 1012


def missing_hooks() -> list[str]:
    """What DrainingWebSocket relies on that the installed uvicorn's protocol lacks (methods, attributes:
    rnnstream.server.uvicorn_shape). Non-empty: ``rnnstream serve`` uses uvicorn's own protocol.

    >>> missing_hooks()
    []
    """
    return missing(Reliance(WebSocketsSansIOProtocol, UVICORN_HOOKS, UVICORN_STATE))


class DrainingWebSocket(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol; on SIGTERM the app answers what it has received, then closes."""

    draining = False

    def shutdown(self) -> None:
        if self.close_sent or not self.handshake_complete or self.initial_response is not None:
            super().shutdown()  # nothing to drain: uvicorn's own shutdown
            return
        self.draining = True
        self.stop_keepalive()
        if not self.read_paused:  # what the client sends from now on is never read (until the close:
            self.read_paused = True  # uvicorn resumes reading then, for the client's close reply)
            self.transport.pause_reading()
        self.queue.put_nowait({"type": "websocket.disconnect", "code": SERVICE_RESTART})

    async def receive(self) -> Any:
        """uvicorn's, but reading stays paused while draining (uvicorn resumes it when its queue empties)."""
        message = await self.queue.get()
        if self.read_paused and self.queue.empty() and not self.draining:
            self.read_paused = False
            self.transport.resume_reading()
        return message
