"""Streams: many independent streams of one model, their states in a store, stepped in batches.

>>> import numpy as np, rnnstream
>>> streams = rnnstream.Streams(rnnstream.load(rnnstream.demo.SEED_MODEL))
>>> out = streams.step({"a": np.zeros(4, np.float32), "b": np.ones(4, np.float32)})
>>> sorted(out), out["a"].shape, len(streams)
(['a', 'b'], (1,), 2)
>>> streams.step({"a": np.zeros(4, np.float32)}, step_numbers={"a": 2})["a"].shape
(1,)
>>> streams.step({"c": np.ones((100, 4), np.float32)}, steps={"c": 100}, outputs="all")["c"].shape
(100, 1)
"""

from __future__ import annotations

import struct
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np

from rnnstream.errors import InputError, RnnstreamError, StateError, StreamLimitError, StreamNotFoundError
from rnnstream.model import StreamModel
from rnnstream.output_codec import Codec
from rnnstream.state import State
from rnnstream.step_request import Result, StepRequest
from rnnstream.stepping import advance
from rnnstream.stores import Store, open_store
from rnnstream.stores.store import Records
from rnnstream.types import FloatArray, Inputs, Outputs

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
        self._codec = Codec([spec.shape for spec in model.output_specs])
        self.store: Store = open_store(
            store,
            state_size=model.state_size,
            output_size=sum(self._codec.sizes),
            ttl=ttl,
            namespace=namespace if namespace is not None else f"rnnstream:{model.fingerprint[:16]}:",
        )
        self._lock = threading.RLock()

    @property
    def codec(self) -> Codec:
        """How this model's outputs are flattened into the store's rows."""
        return self._codec

    def __repr__(self) -> str:
        return f"Streams({self.model.name!r}, store={self.store!r}, max_streams={self.max_streams})"

    # -- stepping ------------------------------------------------------------------------------------

    def step(
        self,
        inputs: Mapping[str, Inputs],
        step_numbers: Mapping[str, int] | None = None,
        *,
        steps: Mapping[str, int] | None = None,
        outputs: Literal["last", "all"] = "last",
        check_finite: bool = False,
    ) -> dict[str, Outputs]:
        """Advance each stream in ``inputs`` (``{id: x}``, x without a batch axis) by one step.

        New ids start from the initial state. ``step_numbers`` (``{id: n}``, the first step is 1)
        makes retries exactly-once: the number of the last applied step returns that step's stored
        output without advancing; any other number but the next is refused with StepOrderError.
        One engine call serves every stream; if the call fails, no stream advances.

        History priming: ``steps`` (``{id: T}``) says that x of stream ``id`` holds T steps along a leading
        time axis (``[T, *features]`` per input); the stream takes all T in one engine pass
        (``StreamModel.run``) and counts T steps. Its step number names the first of them (the stream's
        next is n + T; a resend of the same n and T returns the answer it got). ``outputs``: ``"last"``
        (the last step's outputs, as for one step) or ``"all"`` (``[T, *shape]``, every step's).
        """
        ids = list(inputs)
        numbers = _check_numbers(ids, step_numbers or {})
        counts = _check_numbers(ids, steps or {}, what="steps", noun="numbers of steps")
        if outputs not in ("last", "all"):
            raise InputError(f'outputs is "last" or "all", got {outputs!r}')
        requests = [StepRequest(i, inputs[i], numbers.get(i), steps=counts.get(i), all_outputs=outputs == "all")
                    for i in ids]
        results = self._advance(requests, isolate=False, check_finite=check_finite)
        return dict(zip(ids, results, strict=True))  # type: ignore[arg-type]  # no errors when not isolating

    def step_each(self, requests: Sequence[StepRequest], *, check_finite: bool = False) -> list[Result]:
        """Advance the streams of ``requests`` (distinct ids) in one engine call, each on its own:
        a request that fails gets its error as its result, and the others still advance.

        >>> import numpy as np, rnnstream
        >>> streams = rnnstream.Streams(rnnstream.load(rnnstream.demo.SEED_MODEL))
        >>> ok, bad = streams.step_each([StepRequest("a", np.zeros(4)), StepRequest("b", np.zeros(3))])
        >>> ok.shape, type(bad).__name__
        ((1,), 'InputError')
        """
        return self._advance(list(requests), isolate=True, check_finite=check_finite)

    def _advance(self, requests: list[StepRequest], *, isolate: bool, check_finite: bool) -> list[Result]:
        ids = [r.stream_id for r in requests]
        bad_ids = [i for i in ids if not isinstance(i, str) or not i]
        if bad_ids:
            raise InputError(f"stream ids are non-empty strings, got {bad_ids}")
        if len(set(ids)) != len(ids):
            repeated = sorted(i for i, n in Counter(ids).items() if n > 1)
            raise InputError(f"one call steps each stream once; repeated ids: {repeated}")
        if not requests:
            return []
        with self._lock:
            return advance(self.model, self.store, self._codec, requests, isolate=isolate, check_finite=check_finite,
                           max_streams=self.max_streams, conflict_retries=self.conflict_retries)

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
        if not exists and self.max_streams is not None and not self.store.admit([stream_id], self.max_streams)[0]:
            raise StreamLimitError(
                f"starting stream {stream_id!r} would exceed max_streams={self.max_streams}; close idle streams, "
                "set a ttl, or raise max_streams"
            )

    def states(self, stream_ids: Sequence[str]) -> State:
        """The current states of ``stream_ids`` as one State (the initial state for unknown ids)."""
        rows = self.store.load(list(stream_ids)).rows
        return State.adopt(rows, self.model.fingerprint)

    def steps_applied(self, stream_id: str) -> int:
        """How many steps ``stream_id`` has applied (0 for an unknown or ended stream)."""
        records = self.store.load([stream_id])
        return int(records.steps[0]) if records.exists[0] else 0

    def ids(self) -> list[str]:
        return self.store.ids()

    def __len__(self) -> int:
        return self.store.count()

    def __contains__(self, stream_id: object) -> bool:
        return isinstance(stream_id, str) and bool(self.store.load([stream_id]).exists[0])

    def close_store(self) -> None:
        """Release the store's connections."""
        self.store.close()


def _check_numbers(ids: list[str], numbers: Mapping[str, int], what: str = "step_numbers",
                   noun: str = "step numbers") -> dict[str, int]:
    unknown = sorted(set(numbers) - set(ids))
    if unknown:
        raise InputError(f"{what} names streams {unknown} that are not stepped in this call")
    for stream_id, n in numbers.items():
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
            raise InputError(f"stream {stream_id!r}: {noun} are integers from 1, got {n!r}")
    return {k: int(v) for k, v in numbers.items()}
