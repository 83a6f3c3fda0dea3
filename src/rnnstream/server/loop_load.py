"""How busy the event loop is, and how many engine threads a launched step gets because of it.

On a machine with few cores, a step's second engine thread runs on the event loop's core whenever the
loop is busy, and either one waits for the other. Measured with the large model (3.4M parameters) and
1,000 streams on a 2-core Zen 5: over HTTP, where the loop works hardest, it was 77% busy with two
engine threads and carried 18,000 steps/s, and 21,000 with one; over WebSocket it was 30–36% busy and
two threads carried 40,000–45,000 steps/s against 33,600. So a launched step gets one thread while the
loop has lately been busy at least ``BUSY_LOOP`` of the time, and every thread otherwise.

>>> load = LoopLoad(window=0.0)
>>> load.busy()  # the first call starts the clock
0.0
>>> _ = sum(i * i for i in range(200_000))  # this thread computes: busy
>>> load.busy() > 0.2, engine_threads(4, busy=0.9), engine_threads(4, busy=0.2), engine_threads(1, busy=0.9)
(True, 1, None, None)
"""

from __future__ import annotations

import time

BUSY_LOOP = 0.6
"""The loop's share of a core (CPU time over wall time, lately) from which a launched step gets one
engine thread: between the measurements above (77% with two threads over HTTP, 30–36% over WebSocket)."""


class LoopLoad:
    """The calling thread's CPU time over wall time, measured over windows of ``window`` seconds (call
    ``busy`` from the thread to measure: the event loop's)."""

    def __init__(self, window: float = 0.1) -> None:
        self.window = window
        self._since: tuple[float, float] | None = None  # (wall, thread CPU) when the window began
        self._busy = 0.0

    def busy(self) -> float:
        """The share of the last whole window this thread spent on a CPU (0 before the first one)."""
        now, cpu = time.perf_counter(), time.thread_time()
        if self._since is None:
            self._since = (now, cpu)
            return self._busy
        wall = now - self._since[0]
        if wall > 0 and wall >= self.window:
            self._busy = (cpu - self._since[1]) / wall
            self._since = (now, cpu)
        return self._busy


def engine_threads(threads: int, busy: float) -> int | None:
    """The threads a launched step gets: 1 when the engine has several and the loop is busy, else None
    (all of them)."""
    return 1 if threads > 1 and busy >= BUSY_LOOP else None
