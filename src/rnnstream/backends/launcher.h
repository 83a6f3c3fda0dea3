/* Running a whole engine step in the background, with no Python thread waiting for it.
 *
 * launch(items, state, new_state, threads, fd) (_fused.c) checks every node's arrays (as step() does),
 * queues the nodes' jobs for the runner thread (launch_submit) and returns at once; the runner runs them
 * in order (a node may read what an earlier one wrote), then writes 8 bytes to fd (a pipe or eventfd the
 * caller's event loop watches) and done(launched) turns True. Launches run one after another, in the
 * order they came.
 *
 * Why not a Python worker thread: one that releases the GIL for the kernel must take it back, and an
 * event loop that keeps releasing and retaking it (every socket call) wins that race each time, so the
 * worker waited until the loop ran out of work: measured serving 1,000 WebSocket streams of the seed
 * model on 2 cores, a batch's Python took 1.3 ms of CPU and 5.8 ms of wall time, whatever the switch
 * interval. The runner needs no GIL: the loop learns of the end from fd and takes the results itself.
 *
 * The launched object holds references to every array it writes or reads until it is released;
 * releasing it early waits for its jobs to finish. In a child forked while steps were queued or
 * running, those steps never run: done() raises RuntimeError there (and releasing them does not wait).
 */
#ifndef RNNSTREAM_LAUNCHER_H
#define RNNSTREAM_LAUNCHER_H

#include "kernel.h"

#if defined(__unix__) || defined(__APPLE__)
#define HAVE_LAUNCHER 1
#include <stdatomic.h>
#else
#define HAVE_LAUNCHER 0
#endif

#pragma GCC visibility push(hidden)

#if HAVE_LAUNCHER

typedef struct Launch {
    struct Launch *next;
    Job *jobs;
    size_t *packed_floats; /* per job: blocked-path scratch the runner provides */
    Py_ssize_t count;
    int fd;
    _Atomic int status; /* LAUNCH_QUEUED, then LAUNCH_DONE, LAUNCH_FAILED (out of memory) or LAUNCH_LOST */
    PyObject *refs;     /* the arrays and plans the jobs point into */
} Launch;

enum { LAUNCH_QUEUED = 0, LAUNCH_DONE = 1, LAUNCH_FAILED = 2, LAUNCH_LOST = 3 /* forked while queued */ };

/* Queue launch for the runner thread (started on first use, signals left to Python's threads): 0, or -1
 * when the thread could not be started. */
int launch_submit(Launch *launch);

#endif

/* Once, at import: a forked child marks what was queued or running as lost and starts afresh. */
void launcher_init(void);

#pragma GCC visibility pop

#endif
