"""The state store interface: what Streams needs to keep per-stream state somewhere.

A store holds, per stream id: the state row (``S`` float32), the number of steps applied, the output of
the last step (``O`` float32, for exactly-once retries) and a write version. ``commit`` writes a batch
with compare-and-set on the versions, so two processes can never both advance a stream from the same
state: one write wins, the other is reported as a conflict.

A history-priming write (T steps in one request, ``sequence_outputs: "all"``) keeps the request's whole
answer, ``(T, O)``, as the stored output (its last row is the last step's output), so that a resend of
that request is answered with every step's outputs; any later write keeps one row again.

A stream's last step may *end* it: the store then keeps an ended record (steps and last output, no state)
for ``end_retention`` seconds, so that a retry of that step is answered with its output. An ended
stream is not live: it is not counted, not listed, and a start begins it afresh.

``count`` and ``admit`` keep the number of live streams without a scan (``max_streams``): ``admit``
reserves room for new streams atomically, so that processes sharing a store never start more than the
limit between them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from rnnstream.types import BoolArray, FloatArray, IntArray

END_RETENTION = 600.0
"""Seconds an ended stream's record is kept for retries of its last step when the store has no ttl."""


@dataclass(frozen=True)
class Records:
    """A batch of streams as stored, row-aligned with the ids asked for.

    ``versions == 0`` marks a stream the store does not hold (never started, closed or expired): its
    row, steps and output are zeros.
    """

    rows: FloatArray  # (N, S)
    steps: IntArray  # (N,)
    versions: IntArray  # (N,)
    outputs: FloatArray  # (N, O)
    ended: BoolArray  # (N,): an ended record (steps and output kept for retries, the state row is zeros)
    answers: dict[int, FloatArray] = field(default_factory=dict)
    """The stored answers of more than one step, by position: ``(T, O)``, the last row being ``outputs[i]``."""

    @property
    def exists(self) -> BoolArray:
        """The live streams (held and not ended)."""
        return np.asarray((self.versions > 0) & ~self.ended)

    @staticmethod
    def empty(n: int, state_size: int, output_size: int) -> Records:
        return Records(
            rows=np.zeros((n, state_size), np.float32),
            steps=np.zeros(n, np.int64),
            versions=np.zeros(n, np.int64),
            outputs=np.zeros((n, output_size), np.float32),
            ended=np.zeros(n, bool),
        )


class Store(ABC):
    """Per-stream state rows, step counters and last outputs, with compare-and-set writes."""

    in_process = False
    """True when load and commit touch only this process's memory (no I/O): fast enough for an event loop."""

    def __init__(self, state_size: int, output_size: int, ttl: float | None) -> None:
        self.state_size = state_size
        self.output_size = output_size
        self.ttl = ttl
        self.end_retention = ttl if ttl is not None else END_RETENTION
        """Seconds an ended stream's last step and output are kept for retries."""

    @abstractmethod
    def load(self, ids: Sequence[str]) -> Records:
        """Read the records of ``ids`` (zeros and version 0 for streams not held).

        The arrays are new and the caller's: it may write to them or hand them over.
        """

    @abstractmethod
    def commit(
        self,
        ids: Sequence[str],
        versions: IntArray,
        rows: FloatArray,
        steps: IntArray,
        outputs: FloatArray,
        ended: BoolArray | None = None,
        answers: Mapping[int, FloatArray] | None = None,
    ) -> BoolArray:
        """Write each stream whose version is still ``versions[i]`` (0: must not be held yet).

        ``ended[i]``: the step ends the stream; its record is kept ended (steps and output) for
        ``end_retention`` seconds. ``answers[i]``: the whole answer ``(T, O)`` of a request of T steps
        that asked for every step's outputs (its last row is ``outputs[i]``), kept as the stored output.
        Returns one bool per stream: True if written, False on a conflict (its version had changed).
        """

    @abstractmethod
    def admit(self, ids: Sequence[str], limit: int) -> list[bool]:
        """Reserve room for new streams ``ids`` in order while fewer than ``limit`` streams are live (or
        reserved); one bool per id. Atomic across every process sharing the store. A reservation not
        followed by a commit lapses (``release`` ends it at once)."""

    @abstractmethod
    def release(self, ids: Sequence[str]) -> None:
        """Give back the reservations of ``ids`` (admitted, then not written)."""

    @abstractmethod
    def put(self, stream_id: str, row: FloatArray, steps: int, output: FloatArray) -> None:
        """Write one stream unconditionally (reset, restore, fork)."""

    @abstractmethod
    def delete(self, stream_id: str) -> bool:
        """Forget a stream (an ended record too); False if it was not live."""

    @abstractmethod
    def ids(self) -> list[str]:
        """The ids of every live stream (expired and ended ones excluded)."""

    def recent(self, limit: int) -> list[str]:
        """Up to ``limit`` live streams, most recently written first where the store can tell cheaply.
        This default lists :meth:`ids` in their order (a full listing): stores override it."""
        return self.ids()[:limit]

    @abstractmethod
    def count(self) -> int:
        """How many streams are live (reservations included), without a scan of the store."""

    def confirm(self, ids: Sequence[str]) -> None:  # noqa: B027 (only a replicated store has work here)
        """Return once the records of ``ids``, as last loaded, are as durable as this store's writes (a step
        answered from its stored record, a retry, must not be acknowledged before the record is kept as
        its write would be); raise the store's error if they are not. The default has nothing to wait for."""

    def close(self) -> None:  # noqa: B027 (an optional hook: most stores hold no connection)
        """Release connections; the default has none."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(state_size={self.state_size}, ttl={self.ttl})"
