"""Process-wide settings of a serving process: the allocator, OpenMP's waiting, the garbage collector.

``rnnstream serve`` (and each of its worker processes) applies them; an app made with ``create_app``
in someone else's process changes none of them.
"""

from __future__ import annotations

import ctypes
import gc
import os

GC_YOUNG_THRESHOLD = 10_000
"""Net allocations of objects between collections of the youngest generation while serving (Python: 700)."""

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
"""glibc's ``mallopt`` parameters (malloc.h)."""


def tune_process() -> None:
    """Process settings for a server that steps batches on a worker thread beside its event loop.

    - OpenMP threads (the torch backend's) wait passively: threads that spin while they wait for work
      (libgomp's default) take the event loop's core, and cost ~30% more CPU per step under load. The
      fused kernel's own helper threads poll for 150 µs after each task (``RNNSTREAM_SPIN_US``), then sleep
      (work_pool.c).
    - Freed memory stays in the heap (glibc): a batch's state rows are megabytes, which glibc would hand
      back to the system on free, so that the next batch page-faults them in again. Measured with 1,000
      seed streams: the batch's gather 2.6 → 0.9 ms and its engine call 11.0 → 9.4 ms.

    Settings made in the environment (``OMP_WAIT_POLICY``, ``MALLOC_*``) are left as they are.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if any(name.startswith("MALLOC_") for name in os.environ):
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt  # glibc; elsewhere there is nothing to tune
    except (OSError, AttributeError):
        return
    mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024)  # blocks below this come from the heap (glibc's maximum)
    mallopt(M_TRIM_THRESHOLD, 512 * 1024 * 1024)  # free memory kept in the heap before it is returned



def tune_gc() -> None:
    """Freeze what start-up made and collect the youngest generation less often.

    What start-up made (modules, models) lives as long as the server: out of the collector's way, a full
    collection scans only what requests make (it was a tail-latency spike of several ms). And the youngest
    generation is collected every GC_YOUNG_THRESHOLD (not 700) net allocations: with 1,000 requests in
    flight, their own objects crossed 700 over and over, so the collector ran ~200 young and ~20 middle
    collections a second (2.4 ms each), ~9% of the loop (HTTP, identity).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
