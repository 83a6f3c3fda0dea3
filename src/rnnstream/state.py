"""State: one float32 row per stream, tagged with the fingerprint of the model it belongs to.

Rows can be selected and concatenated, so streams can join and leave a batch between steps, and
serialised to bytes (a 48-byte header, then the rows) to be stored anywhere.

>>> import numpy as np
>>> a = State(np.zeros((2, 3), np.float32), "ab" * 32)
>>> b = State(np.ones((1, 3), np.float32), "ab" * 32)
>>> both = State.concat([a, b])
>>> both.batch_size, both.select([2]).rows.tolist()
(3, [[1.0, 1.0, 1.0]])
>>> State.from_bytes(both.to_bytes()).rows.shape
(3, 3)
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np

from rnnstream.errors import StateError
from rnnstream.types import FloatArray

MAGIC = b"RNST"
VERSION = 1
_HEADER = struct.Struct("<4sB3x32sII")  # magic, version, padding, fingerprint, batch, size
HEADER_SIZE = _HEADER.size


class State:
    """The states of ``batch_size`` streams, ``rows[B, S]``, read-only.

    A State never changes: ``StreamModel.step`` returns a new one. Build one with
    ``StreamModel.initial_state`` or ``StreamModel.state_from_bytes``.
    """

    __slots__ = ("fingerprint", "rows")

    def __init__(self, rows: FloatArray, fingerprint: str) -> None:
        if rows.ndim != 2 or rows.dtype != np.float32:
            raise StateError(f"state rows must be a 2-D float32 array, got {rows.dtype} {rows.shape}")
        own = rows.copy()  # the caller keeps its array; ours is frozen
        own.flags.writeable = False
        self.rows: FloatArray = own
        self.fingerprint = fingerprint

    @classmethod
    def adopt(cls, rows: FloatArray, fingerprint: str) -> State:
        """Wrap ``rows`` without copying; the caller hands them over and must not write to them again."""
        state = cls.__new__(cls)
        rows.flags.writeable = False
        state.rows = rows
        state.fingerprint = fingerprint
        return state

    @property
    def batch_size(self) -> int:
        return int(self.rows.shape[0])

    @property
    def size(self) -> int:
        """Floats per stream."""
        return int(self.rows.shape[1])

    def __len__(self) -> int:
        return self.batch_size

    def __repr__(self) -> str:
        return f"State(batch_size={self.batch_size}, size={self.size}, model={self.fingerprint[:12]})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, State):
            return NotImplemented
        return self.fingerprint == other.fingerprint and np.array_equal(self.rows, other.rows)

    __hash__ = None  # type: ignore[assignment]  # mutable-looking value type: equality by content

    def select(self, rows: int | Sequence[int] | slice) -> State:
        """The states of the chosen streams, in the order given: ``state.select([2, 0])``."""
        picked = self.rows[[rows]] if isinstance(rows, int) else self.rows[rows]
        return State.adopt(np.array(picked, dtype=np.float32), self.fingerprint)

    __getitem__ = select

    @staticmethod
    def concat(states: Sequence[State]) -> State:
        """One State holding the rows of ``states`` in order; they must come from one model."""
        if not states:
            raise StateError("State.concat needs at least one state")
        fingerprints = {s.fingerprint for s in states}
        if len(fingerprints) > 1:
            raise StateError(
                "cannot concatenate states of different models "
                f"({', '.join(sorted(f[:12] for f in fingerprints))})"
            )
        return State.adopt(np.concatenate([s.rows for s in states], axis=0), states[0].fingerprint)

    def to_bytes(self) -> bytes:
        """Serialise: header (magic, version, model fingerprint, batch, size) + little-endian float32 rows."""
        header = _HEADER.pack(MAGIC, VERSION, bytes.fromhex(self.fingerprint), self.batch_size, self.size)
        return header + self.rows.astype("<f4", copy=False).tobytes()

    @staticmethod
    def from_bytes(data: bytes) -> State:
        """Parse bytes made by :meth:`to_bytes`. Prefer ``StreamModel.state_from_bytes``, which also
        checks that the state belongs to that model."""
        if len(data) < HEADER_SIZE:
            raise StateError(f"state bytes too short: {len(data)} bytes, the header alone is {HEADER_SIZE}")
        magic, version, fingerprint, batch, size = _HEADER.unpack_from(data)
        if magic != MAGIC:
            raise StateError(f"not an rnnstream state: starts with {magic!r}, expected {MAGIC!r}")
        if version != VERSION:
            raise StateError(f"state format version {version} is not supported (this rnnstream reads {VERSION})")
        expected = HEADER_SIZE + 4 * batch * size
        if len(data) != expected:
            raise StateError(f"state bytes are {len(data)} long; batch {batch} × size {size} needs {expected}")
        rows = np.frombuffer(data, dtype="<f4", offset=HEADER_SIZE).reshape(batch, size)
        return State.adopt(rows.astype(np.float32), fingerprint.hex())
