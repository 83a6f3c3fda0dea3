"""HTTP/1.1 for the server: uvicorn's httptools protocol, answering small infer requests itself.

Through ASGI, each request costs an asyncio task, a scope, ``receive``/``send`` coroutines and their
messages: with 1,000 keep-alive connections stepping an identity model, the event loop was at 100%
and ~75 µs of it went to each request (13,300 requests/s on a Zen 5), most of it in that machinery
rather than in decoding and stepping. So :class:`InferProtocol` answers an infer request in the
protocol when it is

- ``POST`` to ``/v2/models/{name}[/versions/{v}]/infer`` on the server's app (``ServerApp``),
- with a ``content-length`` of at most ``FAST_BODY_LIMIT`` (and the server's body limit), no
  ``Expect: 100-continue``, no transfer encoding,
- and carries the bearer token when the server wants one:

its body is read as it arrives, its step queued in the model's batcher when it is whole, and the reply
written by the batcher's callback when the step is done (``InferEndpoint.start``, the same code as the
ASGI path takes, so the replies are the same, uvicorn's ``date`` and ``server`` headers too). Anything
else — every other route, large or chunked bodies, a missing token (401), WebSocket upgrades, a
server over its ``limit_concurrency``, a request pipelined behind one still being answered — goes
to the ASGI app as before. uvicorn's bookkeeping is kept: a request answered here has a cycle too
(:class:`InferCycle`, the few attributes of uvicorn's ``RequestResponseCycle`` its protocol touches),
so pipelined requests keep their order, and graceful shutdown (in-flight requests finish, then the
connection closes) and disconnects work as for any request.

One more change to uvicorn's protocol, for every request: uvicorn cancels a connection's keep-alive
timer on every read and arms a new one after every response; here a connection arms one only when it
has none, and when it fires it closes the connection only if it has been idle for the whole timeout
(seed model over HTTP, three alternating pairs of runs: 25,300–26,700 against 22,700–23,200 requests/s).
"""

from __future__ import annotations

import functools
from typing import Any

from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from rnnstream.server.asgi import bearer_matches
from rnnstream.server.infer import SERVER_ERROR, InferEndpoint, Reply, infer_target
from rnnstream.server.uvicorn_shape import Reliance, missing

DRAIN_SECONDS = 1.0
"""How long an idle connection stays open after SIGTERM for a request already on its way."""

FAST_BODY_LIMIT = HIGH_WATER_LIMIT
"""The largest body answered in the protocol: uvicorn's read high-water mark (64 KiB), below which its
flow control never pauses reading a body. Larger ones are dominated by their payload, not the overhead."""


UVICORN_HOOKS = ("on_message_begin", "on_headers_complete", "on_message_complete", "on_response_complete", "shutdown",
                 "_unset_keepalive_if_required", "_start_asgi_task", "timeout_keep_alive_handler")
"""The methods of uvicorn's protocol that InferProtocol overrides or calls (uvicorn's internals)."""
UVICORN_STATE = ("access_log", "access_logger", "app", "client", "cycle", "expect_100_continue", "flow", "headers",
                 "limit_concurrency", "logger", "loop", "parser", "pipeline", "root_path", "server_state",
                 "timeout_keep_alive", "timeout_keep_alive_task", "transport", "url")
"""The attributes of uvicorn's protocol that InferProtocol reads or writes."""


def missing_hooks() -> list[str]:
    """What InferProtocol relies on that the installed uvicorn lacks (rnnstream.server.uvicorn_shape): its
    protocol's methods and attributes, the attributes it reads of a request's cycle (an InferCycle has
    them) and of its server state. Non-empty: ``rnnstream serve`` uses uvicorn's own protocol.

    >>> missing_hooks()
    []
    """
    cycle = InferCycle.__slots__
    return missing(Reliance(HttpToolsProtocol, UVICORN_HOOKS, UVICORN_STATE, {"cycle": cycle})) + missing(
        Reliance(ServerState, attributes=("total_requests", "default_headers"))
    )


class _NoWaiter:
    """Stands for a cycle's ``message_event``: no ASGI task waits on a request answered here."""

    @staticmethod
    def set() -> None:
        return None


class InferCycle:
    """What uvicorn's protocol reads and writes of a request's ``RequestResponseCycle``, for a request
    answered here (a cycle of its own costs more than it does, and no ASGI task waits on it)."""

    __slots__ = ("body", "disconnected", "keep_alive", "message_event", "more_body", "response_complete", "url")

    def __init__(self, keep_alive: bool, url: bytes) -> None:
        self.keep_alive = keep_alive
        self.url = url
        self.body = bytearray()
        self.more_body = True
        self.response_complete = False
        self.disconnected = False
        self.message_event = _NoWaiter


class InferProtocol(HttpToolsProtocol):
    """uvicorn's httptools HTTP/1.1 protocol; infer requests of the served app are answered here.

    >>> import uvicorn
    >>> from rnnstream.server.app import create_app
    >>> from rnnstream.server.config import ServerConfig
    >>> config = uvicorn.Config(create_app(ServerConfig(models=["builtin:identity"])), http=InferProtocol)
    >>> config.load(); config.http_protocol_class is InferProtocol
    True
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.endpoint = infer_endpoint(self.app)
        self.reading: tuple[InferCycle, str, str | None, dict[bytes, bytes]] | None = None
        """The request answered here whose body is still arriving: its cycle, model, version and headers."""
        self.defaults: tuple[list[tuple[bytes, bytes]], bytes] = ([], b"")
        """uvicorn's default headers (date, server; a new list every 0.1 s) and their encoding."""
        self.idle_since: float | None = None
        """When the last response was sent, if no request has come since (the keep-alive clock)."""
        self.draining = False
        """The server is shutting down: every response closes the connection (``shutdown``)."""

    # -- keep-alive: one timer per connection, not one per response -----------------------------------

    def _unset_keepalive_if_required(self) -> None:
        """Called by uvicorn on every read: the connection is busy. (uvicorn cancels its timer here, and
        arms a new one after each response: two timer operations per request.)"""
        self.idle_since = None

    def on_response_complete(self) -> None:
        """uvicorn's, but for the keep-alive timer: armed if none is, and when it fires it closes the
        connection only if it has been idle ``timeout_keep_alive`` seconds since the last response."""
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
            return
        self.idle_since = self.loop.time()
        if self.timeout_keep_alive_task is None:
            self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.keep_alive_due)

    def keep_alive_due(self) -> None:
        self.timeout_keep_alive_task = None
        if self.idle_since is None or self.transport.is_closing():
            return  # busy (its response arms the timer again) or closed
        left = self.idle_since + self.timeout_keep_alive - self.loop.time()
        if left > 0:
            self.timeout_keep_alive_task = self.loop.call_later(left, self.keep_alive_due)
        else:
            self.timeout_keep_alive_handler()

    # -- graceful shutdown ----------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Called by uvicorn on SIGTERM. uvicorn closes an idle keep-alive connection at once, so a request
        its client has just sent is lost ("server disconnected without a response"). Here an idle
        connection stays open ``DRAIN_SECONDS`` for such a request, which is answered with
        ``connection: close``, as is a request being answered now."""
        self.draining = True
        if self.cycle is None or self.cycle.response_complete:
            self.loop.call_later(DRAIN_SECONDS, self._close_if_idle)
        else:
            self.cycle.keep_alive = False

    def _close_if_idle(self) -> None:
        if self.transport.is_closing():
            return
        if self.cycle is None or (self.cycle.response_complete and not self.pipeline):
            self.transport.close()
        else:  # a request came: the connection closes after its response
            self.cycle.keep_alive = False

    # -- infer requests -------------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        """uvicorn makes the request's ASGI scope here; this protocol makes it in ``on_headers_complete``,
        and only for a request that goes to the app."""
        self.url = b""
        self.expect_100_continue = False
        self.headers = []

    def on_headers_complete(self) -> None:
        taken = self.take()
        if taken is None:
            url, headers, expect_100_continue = self.url, self.headers, self.expect_100_continue
            super().on_message_begin()  # the scope, as uvicorn makes it (and a new url and header list)
            self.url, self.expect_100_continue = url, expect_100_continue
            self.headers.extend(headers)  # the list the scope holds
            super().on_headers_complete()
            if self.draining and self.cycle is not None:
                self.cycle.keep_alive = False
            return
        cycle = InferCycle(self.parser.should_keep_alive() and not self.draining, self.url)
        self.cycle = cycle  # type: ignore[assignment]  # it has every attribute uvicorn's protocol uses
        self.reading = (cycle, *taken)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        current: object = self.cycle  # an InferCycle, or uvicorn's cycle of a request not answered here
        if self.reading is not None and self.reading[0] is current:
            reading, self.reading = self.reading, None
            self.begin(*reading)

    def take(self) -> tuple[str, str | None, dict[bytes, bytes]] | None:
        """``(model, version, headers)`` when the request whose headers are in is answered here, else None."""
        parser, endpoint = self.parser, self.endpoint
        if endpoint is None or parser.get_method() != b"POST" or parser.get_http_version() != "1.1":
            return None
        if self.cycle is not None and not self.cycle.response_complete:
            return None  # pipelined behind a request still being answered: uvicorn queues it
        if self.expect_100_continue or parser.should_upgrade() or self.root_path or self.limit_concurrency is not None:
            return None
        path = self.url.partition(b"?")[0]
        if b"%" in path or not path.isascii():
            return None
        target = infer_target(path.decode("ascii"))
        if target is None:
            return None
        headers = dict(self.headers)
        length = headers.get(b"content-length", b"")
        if not length.isdigit() or int(length) > min(FAST_BODY_LIMIT, endpoint.state.config.max_body_bytes):
            return None
        if b"transfer-encoding" in headers:
            return None
        token = endpoint.state.config.token
        if token is not None and not bearer_matches(headers.get(b"authorization", b""), token):
            return None  # the ASGI app's BearerAuth answers 401
        return (*target, headers)

    def begin(self, cycle: InferCycle, name: str, version: str | None, headers: dict[bytes, bytes]) -> None:
        """Queue the step of a request read whole; its reply is written when the step is done."""
        assert self.endpoint is not None
        try:
            self.endpoint.start(name, version, headers, bytes(cycle.body), functools.partial(self.write, cycle))
        except Exception:  # a bug: logged, and answered as uvicorn answers one
            self.logger.exception("the infer endpoint failed on a request for %r", name)
            cycle.keep_alive = False
            self.write(cycle, SERVER_ERROR)

    def write(self, cycle: InferCycle, reply: Reply) -> None:
        """Send ``reply`` and complete ``cycle`` as uvicorn's ``send`` does: the next pipelined request
        starts, or the keep-alive timer is armed; the connection closes if it is not kept alive."""
        if cycle.disconnected:  # the client left: nothing to send (its step stands, as over ASGI)
            return
        defaults = self.server_state.default_headers
        if defaults is not self.defaults[0]:
            self.defaults = (defaults, b"".join(name + b": " + value + b"\r\n" for name, value in defaults))
        lines = [STATUS_LINE[reply.status], self.defaults[1]]
        for name, value in reply.headers:
            lines += [name, b": ", value, b"\r\n"]
        if not cycle.keep_alive:
            lines.append(b"connection: close\r\n")
        lines += [b"\r\n", reply.content]
        self.transport.write(b"".join(lines))
        if self.access_log:  # as uvicorn logs a request (``rnnstream serve`` turns the access log off)
            client = "{}:{}".format(*self.client) if self.client else ""
            self.access_logger.info('%s - "POST %s HTTP/1.1" %d', client, cycle.url.decode("latin-1"), reply.status)
        cycle.response_complete = True
        cycle.message_event.set()
        if not cycle.keep_alive:
            self.transport.close()
        self.on_response_complete()


def infer_endpoint(app: Any) -> InferEndpoint | None:
    """The infer endpoint of rnnstream's app, under uvicorn's own wrappers (proxy headers, trace logging:
    neither changes what an infer request gets); None for any other app.

    >>> from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
    >>> from rnnstream.server.app import create_app
    >>> from rnnstream.server.config import ServerConfig
    >>> app = create_app(ServerConfig(models=["builtin:identity"]))
    >>> infer_endpoint(ProxyHeadersMiddleware(app)) is app.infer_endpoint, infer_endpoint(object())
    (True, None)
    """
    while type(app).__module__.startswith("uvicorn.") and hasattr(app, "app"):
        app = app.app
    endpoint = getattr(app, "infer_endpoint", None)
    return endpoint if isinstance(endpoint, InferEndpoint) else None
