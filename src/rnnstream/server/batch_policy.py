"""Which queued steps go in the next batch, and when: the batcher's policy, with no threads and no loop.

Requests go in arrival order, never two of one stream in a batch (the later one waits for the next, so
each stream's steps keep their order), and never a stream with a step still running (``busy``). When no
batch is running, the queued requests go at once; while one is running, they wait for more to join them
until ``max_batch`` are queued, ``max_delay`` has passed since the oldest arrived, or the running batches
have finished. Waiting while the engine is idle would only add latency: with 1,000 seed-model streams
each sending a step per second (a Zen 4), going at once took the median HTTP latency from 2.3 to 1.1 ms
and, at 10 steps/s over WebSocket, from 6.1 to 3.5 ms. Under load the engine is busy and batches fill.

Many steps that find the engine idle go as two halves (:meth:`BatchPolicy.next_size`): with one batch,
the loop idled while the engine stepped it and the engine idled while the loop answered it (1,000
WebSocket streams ran in lock-step, batches of 600–900); with two, each works on one half while the
other works on the other.

>>> import numpy as np
>>> from rnnstream.step_request import StepRequest
>>> policy = BatchPolicy(max_batch=3, max_delay=0.002, timeout=30.0, row_work=1)
>>> for s in ["a", "b", "a", "c"]:
...     policy.add(Waiting(StepRequest(s, np.zeros(4)), print, arrived=0.0))
>>> [w.request.stream_id for w in policy.next_batch(running=False)]
['a', 'b', 'c']
>>> policy.gather_wait(running=True, now=0.001)  # a batch runs: the last "a" waits 1 ms for company
0.001
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from collections.abc import Set as AbstractSet

from rnnstream.step_request import Result, StepRequest

SPLIT_WORK = 10_000_000
"""Multiply-adds (streams × the model's parameters) each half of a batch needs before an idle engine's
batch goes as two: below it, the second batch's own overhead outweighs the overlap."""


class Waiting:
    """A queued step: its request, the callback that settles it (once, on the loop) and when it came."""

    __slots__ = ("arrived", "done", "request")

    def __init__(self, request: StepRequest, done: Callable[[Result], None], arrived: float | None = None) -> None:
        self.request, self.done = request, done
        self.arrived = time.perf_counter() if arrived is None else arrived


def take_batch(queue: deque[Waiting], max_batch: int, busy: AbstractSet[str] = frozenset()) -> list[Waiting]:
    """Remove and return the next batch: arrival order, distinct streams, at most ``max_batch``.

    A request whose stream is already in the batch, or in ``busy`` (a batch still running), stays
    queued, ahead of anything of that stream that arrived later.
    """
    batch: list[Waiting] = []
    kept: deque[Waiting] = deque()
    streams: set[str] = set()
    while queue:
        waiting = queue.popleft()
        stream_id = waiting.request.stream_id
        if len(batch) < max_batch and stream_id not in streams and stream_id not in busy:
            batch.append(waiting)
        else:
            kept.append(waiting)
        streams.add(stream_id)
    queue.extend(kept)
    return batch


class BatchPolicy:
    """The queue of one model's steps, and the rules that form batches from it.

    ``row_work``: multiply-adds per stream and step (the model's parameters); ``split_work``: see
    SPLIT_WORK. ``busy``: the streams of running batches, kept by the caller.
    """

    def __init__(
        self, *, max_batch: int, max_delay: float, timeout: float, row_work: int, split_work: int = SPLIT_WORK
    ) -> None:
        self.max_batch = max(1, max_batch)
        self.max_delay = max(0.0, max_delay)
        self.timeout = timeout
        self.row_work, self.split_work = row_work, split_work
        self.queue: deque[Waiting] = deque()
        self.busy: set[str] = set()
        self.second_half = False  # the last batch was the first half of a split one

    def add(self, waiting: Waiting) -> None:
        self.queue.append(waiting)

    def put_back(self, retry: list[Waiting]) -> None:
        """Queue ``retry`` again, first, in its order (steps whose stream changed while they ran)."""
        self.queue.extendleft(reversed(retry))

    def gather_wait(self, *, running: bool, now: float, closing: bool = False) -> float:
        """Seconds to wait for more requests before the next batch is formed; 0: form it now. The rest of
        a split batch takes no wait, nor does a full queue, a closing batcher, or an idle engine."""
        if self.second_half or closing or not running or not self.queue or len(self.queue) >= self.max_batch:
            return 0.0
        return max(0.0, self.queue[0].arrived + self.max_delay - now)

    def expired(self, now: float) -> list[Waiting]:
        """Remove and return the requests that have waited longer than ``timeout``."""
        gone = []
        while self.queue and now - self.queue[0].arrived > self.timeout:
            gone.append(self.queue.popleft())
        return gone

    def next_batch(self, *, running: bool) -> list[Waiting]:
        """Remove and return the next batch (empty when every queued stream is busy)."""
        size, self.second_half = self.next_size(running=running)
        return take_batch(self.queue, size, self.busy)

    def next_size(self, *, running: bool) -> tuple[int, bool]:
        """The next batch's size, and whether it is the first half of a split one: ``max_batch``, or half
        of what waits when the engine is idle and each half is worth ``split_work``. The second half
        follows at once, queued behind the first, so the loop writes the first back and answers its
        streams while the engine steps the second, instead of one idling while the other works."""
        waiting = min(len(self.queue), self.max_batch)
        if running or waiting < 2 or waiting * self.row_work < 2 * self.split_work:
            return self.max_batch, False
        return (waiting + 1) // 2, True
