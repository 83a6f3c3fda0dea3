"""A client for ``rnnstream serve``: streams stepped exactly once over WebSocket or HTTP, with retries.

``Client`` blocks; ``AsyncClient`` is its asyncio form. Each stream numbers its steps (``sequence_step``) and
resends a request unchanged after a lost connection or a retryable refusal, so a server restart on a shared store
loses no step and doubles none. websockets and httpx are imported when a client first sends.
"""

from rnnstream.client.aio import AsyncClient, AsyncStream
from rnnstream.client.outcomes import ClientTimeoutError, ServerError
from rnnstream.client.retry import ClientStats, RetryPolicy
from rnnstream.client.sync import Client, Stream

__all__ = [
    "AsyncClient",
    "AsyncStream",
    "Client",
    "ClientStats",
    "ClientTimeoutError",
    "RetryPolicy",
    "ServerError",
    "Stream",
]
