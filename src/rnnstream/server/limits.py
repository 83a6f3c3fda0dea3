"""Every size a client controls, bounded: the server's named limits, their flags and what exceeding them answers.

Each limit is a field of :class:`~rnnstream.server.config.ServerConfig` (default: ``Limit.default``) and a flag of
``rnnstream serve`` (``--max-prompt-tokens``...). A request past a limit is refused before any work with
a JSON error naming the limit, the request's value and the limit (:class:`~rnnstream.server.refusals.LimitError`);
the per-connection limits hold a client back instead (backpressure) or end its stream with an event.

>>> [limit.flag for limit in LIMITS][:3]
['--max-body-bytes', '--max-id-length', '--max-ws-requests']
>>> check("max_prompt_tokens", 100, 8192)  # within: nothing happens
>>> check("max_prompt_tokens", 9000, 8192)  # doctest: +ELLIPSIS
Traceback (most recent call last):
rnnstream.server.refusals.LimitError: prompt tokens of a generation: 9,000 is over this server's limit of 8,192 (...)
"""

from __future__ import annotations

from dataclasses import dataclass

from rnnstream.server.refusals import LimitError


@dataclass(frozen=True)
class Limit:
    """One limit: ``name`` (the ServerConfig field), what it bounds, and what a request past it gets."""

    name: str
    default: int
    what: str
    answer: str
    status: int = 400

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


LIMITS: tuple[Limit, ...] = (
    Limit("max_body_bytes", 16 * 1024 * 1024, "bytes in a request body, a WebSocket message or a gRPC message",
          "413 (WebSocket: the socket closes with code 1009; gRPC: RESOURCE_EXHAUSTED)", 413),
    Limit("max_id_length", 256, "characters in a sequence_id or a request id", "400"),
    Limit("max_ws_requests", 4096, "requests in one WebSocket message", "400"),
    Limit("max_ws_inflight", 256, "WebSocket messages of one socket being answered at once",
          "the socket is not read until one is answered (backpressure)"),
    Limit("max_grpc_inflight", 256, "requests of one gRPC ModelStreamInfer stream being answered at once",
          "the stream is not read until one is answered (backpressure)"),
    Limit("max_prompt_tokens", 8192, "prompt tokens of a generation", "400"),
    Limit("max_tokens", 2000, "tokens one generation may ask for", "400"),
    Limit("max_stop", 16, "stop sequences of one generation", "400"),
    Limit("max_stop_length", 64, "characters in one stop text", "400"),
    Limit("max_generations", 1000, "generations running at once", "503 (retryable)", 503),
    Limit("max_sse_buffer", 1024, "token events buffered for a client that does not read them",
          "the generation ends with an error event"),
    Limit("max_forecast_steps", 1_000_000, "stream-steps of one forecast: horizon × (paths + 1)", "400"),
    Limit("max_forecast_paths", 10_000, "scenario paths of one forecast (each holds a state row)", "400"),
    Limit("max_forecast_values", 1_000_000, "numbers in a forecast reply: horizon × outputs × (quantiles + 1)",
          "400"),
    Limit("max_quantiles", 99, "quantiles one forecast may ask for", "400"),
    Limit("max_prime_steps", 10_000, "steps of one history-priming step request (its inputs' time axis T)", "400"),
    Limit("max_listed_streams", 100, "streams one list of a model's active streams may ask for", "400"),
    Limit("max_watchers", 64, "live-page watches of streams open at once (server-wide)", "503 (retryable)", 503),
    Limit("max_watch_steps", 1000, "recent steps a watched stream's ring buffer keeps", "400"),
    Limit("max_csv_rows", 10_000, "rows (steps) of one CSV stepped through a stream", "400"),
)
"""Every limit, in the order the table in docs/operations.md lists them."""

BY_NAME = {limit.name: limit for limit in LIMITS}
DEFAULTS = {limit.name: limit.default for limit in LIMITS}


def markdown_table() -> str:
    """The limits as docs/operations.md tables them (name, default, flag, what it bounds, what past it answers)."""
    rows = ["| name | default | flag | bounds | past it |", "|---|---:|---|---|---|"]
    rows += [f"| `{limit.name}` | {limit.default:,} | `{limit.flag}` | {limit.what} | {limit.answer} |"
             for limit in LIMITS]
    return "\n".join(rows)


def check(name: str, value: int, limit: int) -> None:
    """Refuse ``value`` past ``limit`` (the server's setting of limit ``name``) with a LimitError."""
    if value > limit:
        known = BY_NAME[name]
        raise LimitError(name, value, limit, known.what.split(":")[0], known.status)
