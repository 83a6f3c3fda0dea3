"""``memory://``: an arena of state rows in this process, with a free list.

All streams' rows live in an arena of fixed-size chunks of ``[CHUNK_ROWS, S]`` float32; a dict maps
each id to its row, and a batch is a gather and a scatter by row index. Freed rows are reused; a full
arena gains a chunk (nothing is copied, and at most one chunk is ever unused). The small per-stream
columns (steps, versions, write times, last outputs) are flat arrays that double. Idle streams expire
``ttl`` seconds after their last write. An ended stream gives its row back at once; its step count and
last output stay in a small table, oldest first, for ``end_retention`` seconds (at most ``MAX_ENDED``).
A stored answer of several steps (history priming with every step's outputs) is kept in a dict beside the
arena (its last row in the outputs column too), and in the ended table as the flat answer.

>>> import numpy as np
>>> store = MemoryStore(state_size=2, output_size=1)
>>> new = store.load(["a"])
>>> store.commit(["a"], new.versions, np.ones((1, 2), np.float32), np.int64([1]), np.zeros((1, 1), np.float32))
array([ True])
>>> store.load(["a"]).rows
array([[1., 1.]], dtype=float32)
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np

from rnnstream.stores.store import Records, Store
from rnnstream.types import Array, BoolArray, FloatArray, IntArray

INITIAL_CAPACITY = 1024
CHUNK_ROWS = 4096
MAX_ENDED = 100_000
"""Ended streams whose last step and output are kept for retries; past it the oldest is forgotten first."""


class _Ended(NamedTuple):
    version: int
    steps: int
    output: FloatArray  # (O,), or (T * O,): a stored answer of T steps
    ended_at: float


class ChunkedRows:
    """A ``[capacity, width]`` float32 array kept as chunks of CHUNK_ROWS rows; grows without copying."""

    def __init__(self, width: int) -> None:
        self.width = width
        self.chunks: list[FloatArray] = []

    @property
    def capacity(self) -> int:
        return len(self.chunks) * CHUNK_ROWS

    @property
    def nbytes(self) -> int:
        return sum(chunk.nbytes for chunk in self.chunks)

    def grow_to(self, rows: int) -> None:
        while self.capacity < rows:
            self.chunks.append(np.zeros((CHUNK_ROWS, self.width), np.float32))

    def gather(self, rows: IntArray) -> FloatArray:
        chunk_of, offset = np.divmod(rows, CHUNK_ROWS)
        single = self._single_chunk(chunk_of)
        if single is not None:  # the usual case: one fancy-indexed copy
            return self.chunks[single].take(offset, axis=0)
        out = np.empty((rows.size, self.width), np.float32)  # (N, width)
        for chunk in np.unique(chunk_of):
            mine = chunk_of == chunk
            out[mine] = self.chunks[chunk][offset[mine]]
        return out

    def scatter(self, rows: IntArray, values: FloatArray) -> None:
        chunk_of, offset = np.divmod(rows, CHUNK_ROWS)
        single = self._single_chunk(chunk_of)
        if single is not None:
            self.chunks[single][offset] = values
            return
        for chunk in np.unique(chunk_of):
            mine = chunk_of == chunk
            self.chunks[chunk][offset[mine]] = values[mine]


    @staticmethod
    def _single_chunk(chunk_of: IntArray) -> int | None:
        """The chunk every row lies in, if they all lie in one."""
        if chunk_of.size == 0:
            return None
        first = int(chunk_of[0])
        return first if bool(np.all(chunk_of == first)) else None


class MemoryStore(Store):
    """Streams' state in this process's memory; fast, and gone when the process ends."""

    in_process = True

    def __init__(self, state_size: int, output_size: int, ttl: float | None = None) -> None:
        super().__init__(state_size, output_size, ttl)
        self._lock = threading.Lock()
        self._index: dict[str, int] = {}
        self._row_ids: list[str | None] = []
        self._free: list[int] = []
        self._rows = ChunkedRows(state_size)  # (capacity, S)
        self._outputs = np.zeros((0, output_size), np.float32)  # (capacity, O)
        self._steps = np.zeros(0, np.int64)
        self._versions = np.zeros(0, np.int64)
        self._written_at = np.zeros(0, np.float64)
        self._next_version = 1
        self._next_sweep = 0.0
        self._ended: OrderedDict[str, _Ended] = OrderedDict()  # oldest first
        self._reserved: set[str] = set()  # admitted new streams not written yet
        self._answers: dict[str, FloatArray] = {}  # stored answers of several steps, (T, O), by stream

    @property
    def capacity(self) -> int:
        """Streams the arrays hold room for (the state chunks may hold a little more)."""
        return int(self._steps.shape[0])

    @property
    def nbytes(self) -> int:
        """Bytes held by the arena's arrays (the per-stream dict entries come on top)."""
        columns = (self._outputs, self._steps, self._versions, self._written_at)
        return self._rows.nbytes + sum(a.nbytes for a in columns)

    # -- reading ------------------------------------------------------------------------------------

    def load(self, ids: Sequence[str]) -> Records:
        with self._lock:
            self._expire_due()
            found = [self._index.get(i, -1) for i in ids]
            rows_of = np.array(found, dtype=np.int64)
            present = rows_of >= 0
            if self.ttl is not None and present.any():
                stale = present & (self._written_at[np.maximum(rows_of, 0)] < time.monotonic() - self.ttl)
                for k in np.flatnonzero(stale):
                    self._forget(ids[int(k)])
                present &= ~stale
            if present.all():  # every stream known (the steady state): no zeros to fill, one copy each
                return self._with_answers(ids, Records(
                    rows=self._rows.gather(rows_of),
                    steps=self._steps[rows_of],
                    versions=self._versions[rows_of],
                    outputs=self._outputs[rows_of],
                    ended=np.zeros(len(ids), bool),
                ))
            records = Records.empty(len(ids), self.state_size, self.output_size)
            at = rows_of[present]
            records.rows[present] = self._rows.gather(at)
            records.outputs[present] = self._outputs[at]
            records.steps[present] = self._steps[at]
            records.versions[present] = self._versions[at]
            if self._ended:
                self._expire_ended()
                for position in np.flatnonzero(~present).tolist():
                    ended = self._ended.get(ids[position])
                    if ended is not None:
                        records.versions[position], records.steps[position] = ended.version, ended.steps
                        records.outputs[position], records.ended[position] = ended.output[-self.output_size :], True
                        if len(ended.output) > self.output_size:
                            records.answers[position] = ended.output.reshape(-1, self.output_size).copy()
            return self._with_answers(ids, records)

    def _with_answers(self, ids: Sequence[str], records: Records) -> Records:
        """``records`` with the stored answers of several steps of its live streams."""
        if self._answers:
            for position, stream_id in enumerate(ids):
                answer = self._answers.get(stream_id)
                if answer is not None and not records.ended[position]:
                    records.answers[position] = answer.copy()
        return records

    def ids(self) -> list[str]:
        with self._lock:
            self._expire_due(force=True)
            return list(self._index)

    def recent(self, limit: int) -> list[str]:
        """Up to ``limit`` live streams, the most recently written first (one pass over the write times).

        >>> store = MemoryStore(1, 1)
        >>> for i in "abc":
        ...     store.put(i, np.zeros(1, np.float32), 1, np.zeros(1, np.float32))
        >>> store.recent(2)
        ['c', 'b']
        """
        with self._lock:
            self._expire_due()
            rows = np.flatnonzero(self._versions > 0)  # (live,)
            if len(rows) > limit:
                rows = rows[np.argpartition(-self._written_at[rows], limit - 1)[:limit]]
            rows = rows[np.argsort(-self._written_at[rows], kind="stable")]
            return [i for i in (self._row_ids[row] for row in rows.tolist()) if i is not None]

    def count(self) -> int:
        """Live streams and reservations; idle streams are swept at most every ttl/4 here (``admit`` sweeps
        at the limit), so the count may include streams expired since the last sweep."""
        with self._lock:
            self._expire_due()
            return len(self._index) + len(self._reserved)

    def admit(self, ids: Sequence[str], limit: int) -> list[bool]:
        with self._lock:
            admitted = []
            for stream_id in ids:
                if stream_id in self._index or stream_id in self._reserved:
                    admitted.append(True)
                    continue
                if len(self._index) + len(self._reserved) >= limit:
                    self._expire_due(force=True)
                ok = len(self._index) + len(self._reserved) < limit
                if ok:
                    self._reserved.add(stream_id)
                admitted.append(ok)
            return admitted

    def release(self, ids: Sequence[str]) -> None:
        with self._lock:
            self._reserved.difference_update(ids)

    # -- writing ------------------------------------------------------------------------------------

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
        with self._lock:
            found = [self._index.get(i, -1) for i in ids]
            held = np.array(found, np.int64)
            plain = ended is None or not ended.any()
            if plain and min(found, default=0) >= 0 and (self._versions[held] == versions).all():
                self._write(held, rows, steps, outputs)  # the usual case: known streams, no conflict
                written = np.ones(len(found), bool)
                if self._answers or answers:
                    self._keep_answers(ids, written, answers or {})
                return written
            self._expire_ended()
            current = np.array([self._versions[row] if row >= 0 else self._ended_version(i)
                                for i, row in zip(ids, found, strict=True)], np.int64)
            ok = current == versions
            ending = np.zeros(len(ids), bool) if ended is None else ended & ok
            answers = answers or {}
            for k in np.flatnonzero(ending).tolist():
                self._end(ids[k], int(steps[k]), answers[k].reshape(-1) if k in answers else outputs[k])
            live = ok & ~ending
            targets = np.array([self._row_for(i) for i, good in zip(ids, live, strict=True) if good], np.int64)
            if targets.size:
                self._write(targets, rows[live], steps[live], outputs[live])
            self._keep_answers(ids, live, answers)
            return np.asarray(ok, dtype=bool)

    def _keep_answers(self, ids: Sequence[str], live: BoolArray, answers: Mapping[int, FloatArray]) -> None:
        """After a write: the streams written ``live`` keep their answer of several steps if they have one,
        and no other."""
        for k in np.flatnonzero(live).tolist():
            answer = answers.get(k)
            if answer is None:
                self._answers.pop(ids[k], None)
            else:
                self._answers[ids[k]] = np.array(answer, np.float32)

    def put(self, stream_id: str, row: FloatArray, steps: int, output: FloatArray) -> None:
        with self._lock:
            self._answers.pop(stream_id, None)
            target = np.array([self._row_for(stream_id)], np.int64)
            self._write(target, row[None], np.array([steps], np.int64), output[None])

    def delete(self, stream_id: str) -> bool:
        with self._lock:
            self._ended.pop(stream_id, None)
            if stream_id not in self._index:
                return False
            self._forget(stream_id)
            return True

    def _ended_version(self, stream_id: str) -> int:
        ended = self._ended.get(stream_id)
        return 0 if ended is None else ended.version

    def _end(self, stream_id: str, steps: int, output: FloatArray) -> None:
        """Keep ``stream_id``'s last step count and output as an ended record; its row (or its reservation,
        for a stream that starts and ends in one step) is freed."""
        self._reserved.discard(stream_id)
        if stream_id in self._index:
            self._forget(stream_id)
        self._ended.pop(stream_id, None)
        self._ended[stream_id] = _Ended(self._next_version, steps, np.array(output, np.float32), time.monotonic())
        self._next_version += 1
        while len(self._ended) > MAX_ENDED:
            self._ended.popitem(last=False)

    def _expire_ended(self) -> None:
        """Forget ended records older than ``end_retention`` (they are in the order they ended)."""
        cutoff = time.monotonic() - self.end_retention
        while self._ended:
            oldest = next(iter(self._ended.values()))
            if oldest.ended_at >= cutoff:
                return
            self._ended.popitem(last=False)

    def _write(self, targets: IntArray, rows: FloatArray, steps: IntArray, outputs: FloatArray) -> None:
        self._rows.scatter(targets, rows)
        self._outputs[targets] = outputs
        self._steps[targets] = steps
        self._versions[targets] = np.arange(self._next_version, self._next_version + targets.size)
        self._next_version += int(targets.size)
        self._written_at[targets] = time.monotonic()

    def _row_for(self, stream_id: str) -> int:
        """The row of ``stream_id``, taking a free one (growing the arena) for a new stream."""
        row = self._index.get(stream_id)
        if row is not None:
            return row
        self._ended.pop(stream_id, None)
        self._reserved.discard(stream_id)
        if not self._free:
            self._grow()
        row = self._free.pop()
        self._rows.grow_to(row + 1)  # state chunks come one at a time, as rows are handed out
        self._index[stream_id] = row
        self._row_ids[row] = stream_id
        return row

    def _grow(self) -> None:
        old = self.capacity
        new = max(INITIAL_CAPACITY, 2 * old)
        self._outputs = _resized(self._outputs, new)
        self._steps = _resized(self._steps, new)
        self._versions = _resized(self._versions, new)
        self._written_at = _resized(self._written_at, new)
        self._row_ids.extend([None] * (new - old))
        self._free.extend(range(new - 1, old - 1, -1))  # pop() hands out low rows first

    def _forget(self, stream_id: str) -> None:
        row = self._index.pop(stream_id)
        self._answers.pop(stream_id, None)
        self._row_ids[row] = None
        self._versions[row] = 0
        self._free.append(row)

    def _expire_due(self, force: bool = False) -> None:
        """Free the rows of streams idle for longer than ``ttl``; at most every ttl/4 unless forced."""
        if self.ttl is None:
            return
        now = time.monotonic()
        if not force and now < self._next_sweep:
            return
        self._next_sweep = now + self.ttl / 4
        stale = np.flatnonzero((self._versions > 0) & (self._written_at < now - self.ttl))
        for row in stale:
            stream_id = self._row_ids[row]
            if stream_id is not None:
                self._forget(stream_id)


def _resized(array: Array, rows: int) -> Array:
    grown = np.zeros((rows, *array.shape[1:]), array.dtype)
    grown[: array.shape[0]] = array
    return grown
