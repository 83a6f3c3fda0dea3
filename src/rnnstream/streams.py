"""Streams: many independent streams of one model, their states in a store, stepped in batches.

>>> import numpy as np, rnnstream
>>> streams = rnnstream.Streams(rnnstream.load(rnnstream.demo.SEED_MODEL))
>>> out = streams.step({"a": np.zeros(4, np.float32), "b": np.ones(4, np.float32)})
>>> sorted(out), out["a"].shape, len(streams)
(['a', 'b'], (1,), 2)
>>> streams.step({"a": np.zeros(4, np.float32)}, step_numbers={"a": 2})["a"].shape
(1,)
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rnnstream.errors import (
    ConflictError,
    InputError,
    RnnstreamError,
    StateError,
    StepOrderError,
    StreamLimitError,
    StreamNotFoundError,
)
from rnnstream.model import Inputs, Outputs, StreamModel
from rnnstream.state import State
from rnnstream.stores import Store, open_store
from rnnstream.stores.base import Records
from rnnstream.types import Array, FloatArray

_SNAPSHOT = struct.Struct("<4sB3xQI")  # magic, version, steps applied, output floats
SNAPSHOT_MAGIC = b"RNSP"


class Streams:
    """Stream ids → states in a store; ``step`` advances any mix of streams in one engine call.

    ``store``: ``"memory://"`` (this process) or ``"redis://host:port/db"`` / ``"redis-cluster://host:port"``
    (shared by processes, durable with Redis persistence). ``ttl``: seconds a stream may stay idle before
    it is forgotten. ``max_streams``: starting more streams than this raises StreamLimitError.
    """

    def __init__(
        self,
        model: StreamModel,
        store: str = "memory://",
        *,
        ttl: float | None = None,
        max_streams: int | None = None,
        namespace: str | None = None,
        conflict_retries: int = 8,
    ) -> None:
        if max_streams is not None and max_streams < 1:
            raise InputError(f"max_streams must be a positive integer or None, got {max_streams!r}")
        self.model = model
        self.max_streams = max_streams
        self.conflict_retries = conflict_retries
        self._shapes = [spec.shape for spec in model.output_specs]
        self._sizes = [int(np.prod(shape)) for shape in self._shapes]
        self.store: Store = open_store(
            store,
            state_size=model.state_size,
            output_size=sum(self._sizes),
            ttl=ttl,
            namespace=namespace if namespace is not None else f"rnnstream:{model.fingerprint[:16]}:",
        )
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"Streams({self.model.name!r}, store={self.store!r}, max_streams={self.max_streams})"

    # -- stepping ------------------------------------------------------------------------------------

    def step(
        self,
        inputs: Mapping[str, Inputs],
        step_numbers: Mapping[str, int] | None = None,
        *,
        check_finite: bool = False,
    ) -> dict[str, Outputs]:
        """Advance each stream in ``inputs`` (``{id: x}``, x without a batch axis) by one step.

        New ids start from the initial state. ``step_numbers`` (``{id: n}``, the first step is 1)
        makes retries exactly-once: the number of the last applied step returns that step's stored
        output without advancing; any other number but the next is refused with StepOrderError.
        One engine call serves every stream; if the call fails, no stream advances.
        """
        ids = list(inputs)
        if not ids:
            return {}
        bad_ids = [i for i in ids if not isinstance(i, str) or not i]
        if bad_ids:
            raise InputError(f"stream ids are non-empty strings, got {bad_ids}")
        numbers = _check_numbers(ids, step_numbers or {})
        batch = self._stack(ids, inputs)
        with self._lock:
            return self._step_locked(ids, batch, numbers, check_finite)

    def _step_locked(
        self, ids: list[str], batch: list[Array], numbers: dict[str, int], check_finite: bool
    ) -> dict[str, Outputs]:
        results: dict[str, Outputs] = {}
        pending = np.arange(len(ids))
        for _ in range(self.conflict_retries + 1):
            pending_ids = [ids[k] for k in pending]
            records = self.store.load(pending_ids)
            apply = self._classify(pending_ids, records, numbers)  # (P,) bool: False = a retry
            for retry in np.flatnonzero(~apply):
                results[pending_ids[retry]] = self._unflatten(records.outputs[retry])
            todo = np.flatnonzero(apply)
            if todo.size == 0:
                break
            self._check_limit(int(np.sum(~records.exists[todo])))
            xs = [x[pending[todo]] for x in batch]
            state = State.adopt(records.rows[todo], self.model.fingerprint)
            ys, new_state = self.model.step(xs[0] if len(xs) == 1 else xs, state, check_finite=check_finite)
            flat = self._flatten(ys)  # (n, O)
            todo_ids = [pending_ids[int(j)] for j in todo]
            written = self.store.commit(todo_ids, records.versions[todo], new_state.rows, records.steps[todo] + 1, flat)
            for row, stream_id in enumerate(todo_ids):
                if written[row]:
                    results[stream_id] = self._unflatten(flat[row])
            pending = pending[todo[~written]]
            if pending.size == 0:
                break
        else:
            conflicted = [ids[k] for k in pending]
            raise ConflictError(
                f"streams {conflicted} were advanced by another process during each of "
                f"{self.conflict_retries + 1} attempts; retry the call (with step numbers it is safe)",
                stream_ids=conflicted,
                applied=dict(results),
            )
        return {i: results[i] for i in ids}

    def _classify(self, ids: list[str], records: Records, numbers: dict[str, int]) -> Any:
        """True where the step applies, False where it is a retry of the last applied step."""
        apply = np.ones(len(ids), dtype=bool)
        for j, stream_id in enumerate(ids):
            n = numbers.get(stream_id)
            if n is None:
                continue
            applied = int(records.steps[j])
            if n == applied and applied > 0:
                apply[j] = False
            elif n != applied + 1:
                history = "it is new, or expired" if applied == 0 else f"it has applied {applied} steps"
                raise StepOrderError(
                    f"stream {stream_id!r} takes step number {applied + 1} next ({history}); got {n}",
                    stream_id=stream_id,
                    expected=applied + 1,
                    received=n,
                )
        return apply

    def _check_limit(self, new_streams: int) -> None:
        if self.max_streams is None or new_streams == 0:
            return
        held = self.store.count()
        if held + new_streams > self.max_streams:
            raise StreamLimitError(
                f"starting {new_streams} new stream(s) would exceed max_streams={self.max_streams} "
                f"({held} held); close idle streams, set a ttl, or raise max_streams"
            )

    def _stack(self, ids: list[str], inputs: Mapping[str, Inputs]) -> list[Array]:
        """One batch array per model input, from each stream's own input; names the stream at fault."""
        specs = self.model.inputs
        columns: list[list[Array]] = [[] for _ in specs]
        for stream_id in ids:
            x = inputs[stream_id]
            if isinstance(x, Mapping):
                parts = [x.get(spec.name) for spec in specs]
            elif len(specs) > 1:
                parts = list(x) if isinstance(x, list | tuple) else []
            else:
                parts = [x]
            if len(parts) != len(specs) or any(p is None for p in parts):
                raise InputError(f"stream {stream_id!r}: give one value per model input {[s.name for s in specs]}")
            for k, (part, spec) in enumerate(zip(parts, specs, strict=True)):
                array = np.asarray(part)
                if array.shape != spec.spec.shape:
                    raise InputError(
                        f"stream {stream_id!r}: input {spec.name!r} has shape {array.shape}, "
                        f"expected {spec.spec.shape} (one step, no batch axis)"
                    )
                columns[k].append(array)
        return [np.stack(column) for column in columns]

    def _flatten(self, ys: Outputs) -> FloatArray:
        outputs = ys if isinstance(ys, list) else [ys]
        return np.concatenate([np.asarray(y, np.float32).reshape(len(y), -1) for y in outputs], axis=1)

    def _unflatten(self, flat: FloatArray) -> Outputs:
        parts, start = [], 0
        for shape, size in zip(self._shapes, self._sizes, strict=True):
            parts.append(np.array(flat[start : start + size], np.float32).reshape(shape))
            start += size
        return parts[0] if len(parts) == 1 else parts

    # -- managing streams ----------------------------------------------------------------------------

    def _load_one(self, stream_id: str) -> Records:
        records = self.store.load([stream_id])
        if not records.exists[0]:
            raise StreamNotFoundError(f"no stream {stream_id!r} (never stepped, closed, or expired)")
        return records

    def reset(self, stream_id: str) -> None:
        """Start ``stream_id`` over from the initial state; its step count goes back to 0."""
        with self._lock:
            self._load_one(stream_id)
            self.store.put(stream_id, np.zeros(self.model.state_size, np.float32), 0,
                           np.zeros(self.store.output_size, np.float32))

    def close(self, stream_id: str) -> None:
        """Forget ``stream_id``."""
        with self._lock:
            if not self.store.delete(stream_id):
                raise StreamNotFoundError(f"no stream {stream_id!r} to close")

    def fork(self, source: str, target: str, *, overwrite: bool = False) -> None:
        """Copy stream ``source`` (state, step count, last output) to ``target``, e.g. to try a what-if."""
        with self._lock:
            records = self._load_one(source)
            self._make_room(target, overwrite)
            self.store.put(target, records.rows[0], int(records.steps[0]), records.outputs[0])

    def snapshot(self, stream_id: str) -> bytes:
        """The stream's state, step count and last output as bytes, for :meth:`restore`."""
        with self._lock:
            records = self._load_one(stream_id)
        header = _SNAPSHOT.pack(SNAPSHOT_MAGIC, 1, int(records.steps[0]), self.store.output_size)
        state = State.adopt(records.rows[:1].copy(), self.model.fingerprint)
        output: bytes = records.outputs[0].astype("<f4").tobytes()
        return header + output + state.to_bytes()

    def restore(self, stream_id: str, data: bytes, *, overwrite: bool = True) -> None:
        """Set ``stream_id`` from :meth:`snapshot` bytes (or a one-row ``State.to_bytes()``)."""
        steps, output, state_bytes = self._parse_snapshot(data)
        state = self.model.state_from_bytes(state_bytes)
        if state.batch_size != 1:
            raise StateError(f"a stream restores from a one-row state, got {state.batch_size} rows")
        with self._lock:
            self._make_room(stream_id, overwrite)
            self.store.put(stream_id, state.rows[0], steps, output)

    def _parse_snapshot(self, data: bytes) -> tuple[int, FloatArray, bytes]:
        if not data.startswith(SNAPSHOT_MAGIC):
            return 0, np.zeros(self.store.output_size, np.float32), data
        if len(data) < _SNAPSHOT.size:
            raise StateError("snapshot bytes are truncated")
        _, version, steps, size = _SNAPSHOT.unpack_from(data)
        if version != 1 or size != self.store.output_size:
            raise StateError(f"snapshot (version {version}, {size} output floats) does not fit this model")
        end = _SNAPSHOT.size + 4 * size
        output = np.frombuffer(data[_SNAPSHOT.size : end], "<f4").astype(np.float32)
        return int(steps), output, data[end:]

    def _make_room(self, stream_id: str, overwrite: bool) -> None:
        exists = bool(self.store.load([stream_id]).exists[0])
        if exists and not overwrite:
            raise RnnstreamError(f"stream {stream_id!r} already exists; pass overwrite=True or close it first")
        if not exists:
            self._check_limit(1)

    def states(self, stream_ids: Sequence[str]) -> State:
        """The current states of ``stream_ids`` as one State (the initial state for unknown ids)."""
        rows = self.store.load(list(stream_ids)).rows
        return State.adopt(rows, self.model.fingerprint)

    def steps_applied(self, stream_id: str) -> int:
        """How many steps ``stream_id`` has applied (0 for an unknown stream)."""
        return int(self.store.load([stream_id]).steps[0])

    def ids(self) -> list[str]:
        return self.store.ids()

    def __len__(self) -> int:
        return self.store.count()

    def __contains__(self, stream_id: object) -> bool:
        return isinstance(stream_id, str) and bool(self.store.load([stream_id]).exists[0])

    def close_store(self) -> None:
        """Release the store's connections."""
        self.store.close()


def _check_numbers(ids: list[str], numbers: Mapping[str, int]) -> dict[str, int]:
    unknown = sorted(set(numbers) - set(ids))
    if unknown:
        raise InputError(f"step_numbers names streams {unknown} that are not stepped in this call")
    for stream_id, n in numbers.items():
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
            raise InputError(f"stream {stream_id!r}: step numbers are integers from 1, got {n!r}")
    return {k: int(v) for k, v in numbers.items()}
