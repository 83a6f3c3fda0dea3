"""The state store interface: what Streams needs to keep per-stream state somewhere.

A store holds, per stream id: the state row (``S`` float32), the number of steps applied, the output of
the last step (``O`` float32, for exactly-once retries) and a write version. ``commit`` writes a batch
with compare-and-set on the versions, so two processes can never both advance a stream from the same
state: one write wins, the other is reported as a conflict.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rnnstream.types import BoolArray, FloatArray, IntArray


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

    @property
    def exists(self) -> BoolArray:
        return np.asarray(self.versions > 0)

    @staticmethod
    def empty(n: int, state_size: int, output_size: int) -> Records:
        return Records(
            rows=np.zeros((n, state_size), np.float32),
            steps=np.zeros(n, np.int64),
            versions=np.zeros(n, np.int64),
            outputs=np.zeros((n, output_size), np.float32),
        )


class Store(ABC):
    """Per-stream state rows, step counters and last outputs, with compare-and-set writes."""

    in_process = False
    """True when load and commit touch only this process's memory (no I/O): fast enough for an event loop."""

    def __init__(self, state_size: int, output_size: int, ttl: float | None) -> None:
        self.state_size = state_size
        self.output_size = output_size
        self.ttl = ttl

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
    ) -> BoolArray:
        """Write each stream whose version is still ``versions[i]`` (0: must not exist yet).

        Returns one bool per stream: True if written, False on a conflict (its version had changed).
        """

    @abstractmethod
    def put(self, stream_id: str, row: FloatArray, steps: int, output: FloatArray) -> None:
        """Write one stream unconditionally (reset, restore, fork)."""

    @abstractmethod
    def delete(self, stream_id: str) -> bool:
        """Forget a stream; False if it was not held."""

    @abstractmethod
    def ids(self) -> list[str]:
        """The ids of every stream held (expired ones excluded)."""

    @abstractmethod
    def count(self) -> int:
        """How many streams are held."""

    def close(self) -> None:  # noqa: B027 (an optional hook: most stores hold no connection)
        """Release connections; the default has none."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(state_size={self.state_size}, ttl={self.ttl})"
