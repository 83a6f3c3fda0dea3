"""The errors rnnstream raises on purpose; every one derives from :class:`RnnstreamError`.

Each message says what was received, what was expected and what to do about it.

>>> issubclass(UnsupportedLayerError, RnnstreamError)
True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


class RnnstreamError(Exception):
    """Root of every error that rnnstream raises on purpose."""


class ModelFileError(RnnstreamError, ValueError):
    """A model file cannot be read: not a model, truncated, or its weights are missing or mis-shaped."""


class UnsupportedLayerError(RnnstreamError, ValueError):
    """A layer cannot be streamed (it needs the future of the sequence) or is not known to rnnstream."""


class InputError(RnnstreamError, ValueError):
    """An input to ``step``/``run`` has the wrong shape, dtype, batch size or values."""


class StateError(RnnstreamError, ValueError):
    """A state does not belong to this model, or its bytes are malformed."""


class MissingDependencyError(RnnstreamError, ImportError):
    """An optional dependency is needed for this call; the message says what to install."""


class StreamNotFoundError(RnnstreamError, LookupError):
    """No stream has this id (never stepped, closed, or expired after its ttl)."""


class StreamEndedError(StreamNotFoundError):
    """The stream ended (``sequence_end``): its last step is kept for retries; a new stream with its id begins
    with a start."""


class StreamLimitError(RnnstreamError):
    """Starting these streams would exceed ``max_streams``; no stream was stepped."""


class StepOrderError(RnnstreamError):
    """A step number skips ahead or goes back; ``expected`` is the number the stream takes next."""

    def __init__(self, message: str, *, stream_id: str, expected: int, received: int) -> None:
        super().__init__(message)
        self.stream_id = stream_id
        self.expected = expected
        self.received = received


class ConflictError(RnnstreamError):
    """Another process advanced these streams at the same time, again and again; retry the call.

    ``applied`` holds the outputs of the streams of the call that were stepped.
    """

    def __init__(self, message: str, *, stream_ids: list[str], applied: dict[str, object]) -> None:
        super().__init__(message)
        self.stream_ids = stream_ids
        self.applied = applied


class StoreError(RnnstreamError):
    """A state store cannot be opened or reached; the message names the store and the cause."""


class ReplicationError(StoreError):
    """Writes reached fewer Redis replicas than the store asks for (``?replicas=N``) in time: their steps are
    not reported done. They may stand on the master; a retry with the same step number is answered safely.

    ``stream_ids`` names those streams; the call's other streams were acknowledged, and ``written`` says for
    each whether its write went through (False: another process had advanced it, a conflict).
    """

    def __init__(self, message: str, *, stream_ids: Sequence[str] = (), written: Mapping[str, bool] | None = None
                 ) -> None:
        super().__init__(message)
        self.stream_ids = list(stream_ids)
        self.written = dict(written or {})
