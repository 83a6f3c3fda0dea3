/* Sharing one kernel call's work with helper threads, without ever waiting for a helper to show up.
 *
 * parallel_range(job, total, chunk, fn, ctx) runs fn over [0, total) in chunks. The calling thread
 * publishes the task and starts on it at once; helper threads, woken (or still polling after the
 * previous task), claim chunks from the same atomic counter. The caller waits only for chunks a helper
 * has already claimed, never for a helper that has not arrived: one the OS has not scheduled yet (a
 * 2-core machine running an event loop beside the engine) costs nothing, where an OpenMP team would
 * wait for it at the region's closing barrier. Measured on a 2-core Zen 5 serving 1,000 WebSocket
 * streams, an engine call took 2.9 ms of wall time while its calling thread computed for 0.8 ms; with
 * this pool a whole batch (store, engine, write-back) fell from ~4.2 to ~3.2 ms.
 *
 * A claim is one 64-bit atomic: the task's generation (high 24 bits) and how many indices were claimed
 * from the front (the caller) and from the back (helpers), 20 bits each, so a helper still holding an
 * earlier task can never claim (or run) a chunk of a later one. One caller
 * uses the pool at a time; a second concurrent caller runs its task alone. Without POSIX threads every
 * task runs on the calling thread.
 *
 * Beside other thread pools in the same process (ONNX Runtime's and OpenBLAS's threads spin after their
 * work), a helper may be preempted holding a chunk, and the caller would wait for it. So idle helpers
 * yield the core every few polls, and a caller that waited for a late helper (work_pool.c: LATE_CHUNKS)
 * runs its next tasks alone, for a stretch that doubles while helpers stay late.
 */
#ifndef RNNSTREAM_WORK_POOL_H
#define RNNSTREAM_WORK_POOL_H

#include <stdatomic.h>

#include "kernel.h"

#if defined(__unix__) || defined(__APPLE__)
#define HAVE_WORK_POOL 1
#else
#define HAVE_WORK_POOL 0
#endif

#pragma GCC visibility push(hidden)

typedef void (*RangeFn)(const Job *job, long lo, long hi, const void *ctx);

/* fn(job, lo, hi, ctx) for chunks [lo, hi) of at most `chunk` indices that cover [0, total), run by this
 * thread and up to job->threads - 1 helpers; returns once every chunk has run. */
void parallel_range(const Job *job, long total, long chunk, RangeFn fn, const void *ctx);

/* Return once *flag holds `value` (another thread of the same task sets it): polls, then yields the core to
 * a thread that waits for one, as a caller waits for its helpers' chunks. */
void wait_until(_Atomic int *flag, int value);

/* How long (µs) idle helpers poll for the next task before they sleep; with us >= 0 (at most 1 s) first set it.
 * 0 without POSIX threads (no helpers). */
long pool_spin_us(long us);

/* Once, at import: a forked child starts a pool of its own. */
void pool_init(void);

#pragma GCC visibility pop

#endif
