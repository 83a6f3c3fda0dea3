"""Watched streams: a short ring buffer of each watched stream's recent steps, fed where results settle.

A stream is watched while a client reads its watch (``GET .../streams/{id}/watch``, rnnstream.server.watch).
Only then does its model's batchers hold a *tap* for it (``Batcher.taps``): the batcher checks one dict per
batch, so unwatched streams cost nothing. Each settled step of a watched stream is appended to its
:class:`Ring` (inputs and outputs, the first ``WATCH_VALUES`` numbers of each tensor) and wakes its readers;
a reader that falls more than the ring's length behind is told how many steps it missed, never buffered.

>>> import numpy as np
>>> ring = Ring(["x"], ["y"], length=2)
>>> for t in range(3):
...     ring.record_step(np.float32([t, t]), [np.float32([10 * t])])
>>> [entry["n"] for entry in ring.entries], ring.since(0)[1]  # entries 2 and 3 kept; 1 dropped
([2, 3], 1)
>>> ring.entries[-1]["inputs"], ring.entries[-1]["outputs"]
({'x': [2.0, 2.0]}, {'y': [20.0]})
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from rnnstream.server import limits
from rnnstream.server.served import ServedModel, ServerState
from rnnstream.step_request import Result, StepRequest

WATCH_VALUES = 16
"""The numbers of each input and output tensor a watched step keeps (the first ones, flattened)."""


def head(value: Any) -> list[float]:
    """The first ``WATCH_VALUES`` numbers of a tensor, flattened, as floats (token ids too).

    >>> head(np.arange(40).reshape(2, 20))[-1], len(head(np.arange(40)))
    (15.0, 16)
    """
    flat = np.asarray(value).reshape(-1)[:WATCH_VALUES]
    return [round(float(v), 6) for v in flat.tolist()]


class Ring:
    """The recent steps of one watched stream (``length`` at most) and the event its readers wait on."""

    def __init__(self, input_names: Sequence[str], output_names: Sequence[str], length: int) -> None:
        self.input_names, self.output_names = list(input_names), list(output_names)
        self.entries: deque[dict[str, Any]] = deque(maxlen=length)
        self.count = 0  # steps recorded since the watch began
        self.readers = 0
        self.changed = asyncio.Event()

    def grow(self, length: int) -> None:
        """Keep at least ``length`` steps from now on."""
        if length > (self.entries.maxlen or 0):
            self.entries = deque(self.entries, maxlen=length)

    def tap(self, request: StepRequest, result: Result) -> None:
        """The batcher's tap: record a settled step (a refused step is not a step of the stream)."""
        if isinstance(result, BaseException):
            return
        self.record_step(request.x, result, start=request.start, end=request.end)

    def record_step(self, x: Any, outputs: Any, *, start: bool = False, end: bool = False) -> None:
        xs = [x[name] for name in self.input_names] if isinstance(x, dict) else [x]
        ys = outputs if isinstance(outputs, list) else [outputs]
        self.count += 1
        self.entries.append({
            "n": self.count, "start": start, "end": end,
            "inputs": {name: head(v) for name, v in zip(self.input_names, xs, strict=True)},
            "outputs": {name: head(v) for name, v in zip(self.output_names, ys, strict=True)},
        })
        self.changed.set()
        self.changed = asyncio.Event()  # readers waiting on the old event wake; new waits need a new step

    def since(self, seen: int) -> tuple[list[dict[str, Any]], int]:
        """The entries after step ``seen`` still kept, and how many after it were dropped meanwhile."""
        kept = [entry for entry in self.entries if entry["n"] > seen]
        first = kept[0]["n"] if kept else self.count + 1
        return kept, first - seen - 1


class Watches:
    """Every watched stream of a server, by (model, stream id), and the number of open watches."""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.rings: dict[tuple[str, str], Ring] = {}
        self.open = 0

    def watch(self, served: ServedModel, stream_id: str, length: int) -> Ring:
        """Start one watch of ``stream_id`` (``max_watchers`` bounds the open ones, ``max_watch_steps`` the
        ring's length): its ring, tapped on every version's batcher. End it with :meth:`unwatch`."""
        config = self.state.config
        limits.check("max_watch_steps", length, config.max_watch_steps)
        limits.check("max_watchers", self.open + 1, config.max_watchers)
        key = (served.name, stream_id)
        ring = self.rings.get(key)
        if ring is None:
            ring = self.rings[key] = Ring([s.name for s in served.model.inputs], served.model.output_names, length)
            for version in self._versions(served.name):
                version.batcher.taps[stream_id] = ring.tap
        ring.grow(length)
        ring.readers += 1
        self.open += 1
        return ring

    def unwatch(self, name: str, stream_id: str) -> None:
        """End one watch; the last one of a stream removes its taps and its ring."""
        self.open -= 1
        ring = self.rings[name, stream_id]
        ring.readers -= 1
        if ring.readers == 0:
            del self.rings[name, stream_id]
            for version in self._versions(name):
                version.batcher.taps.pop(stream_id, None)

    def _versions(self, name: str) -> Iterator[ServedModel]:
        yield from self.state.versions.get(name, {}).values()
