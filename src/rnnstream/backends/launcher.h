/* Running a whole engine step in the background, with no Python thread waiting for it.
 *
 * launch(items, state, new_state, threads, fd) checks every node's arrays (as step() does), queues
 * the nodes' jobs for the runner thread and returns at once; the runner runs them in order (a node may
 * read what an earlier one wrote), then writes 8 bytes to fd (a pipe or eventfd the caller's event loop
 * watches) and done(launched) turns True. Launches run one after another, in the order they came.
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
#if HAVE_WORK_POOL
#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>

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

static void launch_run(Launch *launch) {
    int status = LAUNCH_DONE;
    for (Py_ssize_t i = 0; i < launch->count; i++) {
        Job *job = &launch->jobs[i];
        if (launch->packed_floats[i] > 0 && (job->packed = scratch_for(launch->packed_floats[i])) == NULL) {
            status = LAUNCH_FAILED;
            break;
        }
        if (job->batch > 0) chosen.run(job);
    }
    atomic_store(&launch->status, status);
    const uint64_t one = 1;
    ssize_t written;
    do {
        written = write(launch->fd, &one, sizeof one);
    } while (written < 0 && errno == EINTR); /* EAGAIN: the reader has wake-ups pending already */
}

static struct {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    Launch *head, *tail, *current; /* current: the one running */
    int started;
} runner = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, NULL, NULL, 0};

static void *runner_main(void *unused) {
    (void)unused;
    for (;;) {
        pthread_mutex_lock(&runner.lock);
        while (runner.head == NULL) pthread_cond_wait(&runner.wake, &runner.lock);
        Launch *launch = runner.head;
        runner.head = launch->next;
        if (runner.head == NULL) runner.tail = NULL;
        runner.current = launch;
        pthread_mutex_unlock(&runner.lock);
        launch_run(launch);
        pthread_mutex_lock(&runner.lock);
        runner.current = NULL;
        pthread_mutex_unlock(&runner.lock);
    }
    return NULL;
}

/* Queue launch for the runner thread (started on first use, signals left to Python's threads). */
static int launch_submit(Launch *launch) {
    pthread_mutex_lock(&runner.lock);
    if (!runner.started) {
        sigset_t all, before;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &before);
        pthread_t thread;
        const int failed = pthread_create(&thread, NULL, runner_main, NULL);
        pthread_sigmask(SIG_SETMASK, &before, NULL);
        if (failed) {
            pthread_mutex_unlock(&runner.lock);
            return -1;
        }
        pthread_detach(thread);
        runner.started = 1;
    }
    launch->next = NULL;
    if (runner.tail != NULL)
        runner.tail->next = launch;
    else
        runner.head = launch;
    runner.tail = launch;
    pthread_cond_signal(&runner.wake);
    pthread_mutex_unlock(&runner.lock);
    return 0;
}

/* In a forked child (runner.lock held since before the fork) the runner does not exist: what it was
 * running or had queued never finishes there. */
static void runner_after_fork(void) {
    int queued = LAUNCH_QUEUED;
    if (runner.current != NULL) atomic_compare_exchange_strong(&runner.current->status, &queued, LAUNCH_LOST);
    for (Launch *launch = runner.head; launch != NULL; launch = launch->next)
        atomic_store(&launch->status, LAUNCH_LOST);
    pthread_mutex_init(&runner.lock, NULL);
    pthread_cond_init(&runner.wake, NULL);
    runner.head = runner.tail = runner.current = NULL;
    runner.started = 0;
}

static void runner_before_fork(void) { pthread_mutex_lock(&runner.lock); } /* the queue is whole in the child */

static void runner_in_parent(void) { pthread_mutex_unlock(&runner.lock); }

static void launcher_init(void) { pthread_atfork(runner_before_fork, runner_in_parent, runner_after_fork); }

static void launch_free(PyObject *capsule) {
    Launch *launch = (Launch *)PyCapsule_GetPointer(capsule, "rnnstream.fused.launch");
    if (launch == NULL) return;
    while (atomic_load(&launch->status) == LAUNCH_QUEUED) { /* never free arrays the runner still writes */
        Py_BEGIN_ALLOW_THREADS sched_yield();
        Py_END_ALLOW_THREADS
    }
    Py_XDECREF(launch->refs);
    PyMem_Free(launch->jobs);
    PyMem_Free(launch->packed_floats);
    PyMem_Free(launch);
}

PyDoc_STRVAR(launch_doc,
             "launch(items, state, new_state, threads, fd) -> launched\n\n"
             "Run the nodes items = [(plan, x or None, out or None), ...] in order, as step() would, on the\n"
             "runner thread; write 8 bytes to fd when they are done. Every array is checked before anything runs.");

static PyObject *launch(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *items, *state, *new_state;
    long threads;
    int fd;
    if (!PyArg_ParseTuple(args, "O!OOli", &PyList_Type, &items, &state, &new_state, &threads, &fd)) return NULL;
    const Py_ssize_t count = PyList_GET_SIZE(items);
    Launch *launch = PyMem_Calloc(1, sizeof *launch);
    if (launch == NULL) return PyErr_NoMemory();
    launch->jobs = PyMem_Calloc(count > 0 ? (size_t)count : 1, sizeof *launch->jobs);
    launch->packed_floats = PyMem_Calloc(count > 0 ? (size_t)count : 1, sizeof *launch->packed_floats);
    PyObject *frozen = PyList_AsTuple(items); /* the caller may change its list; the runner reads this */
    if (frozen != NULL) {
        launch->refs = PyTuple_Pack(3, frozen, state, new_state); /* plans, x and out, and the states */
        Py_DECREF(frozen);
    }
    launch->count = count;
    launch->fd = fd;
    PyObject *capsule = NULL;
    if (launch->jobs == NULL || launch->packed_floats == NULL || launch->refs == NULL) {
        if (!PyErr_Occurred()) PyErr_NoMemory();
        goto fail;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *item = PyTuple_GET_ITEM(PyTuple_GET_ITEM(launch->refs, 0), i);
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 3) {
            PyErr_SetString(PyExc_TypeError, "launch(): each item is a (plan, x, out) tuple");
            goto fail;
        }
        if (build_job(PyTuple_GET_ITEM(item, 0), PyTuple_GET_ITEM(item, 1), state, new_state,
                      PyTuple_GET_ITEM(item, 2), threads, &launch->jobs[i], &launch->packed_floats[i]) < 0)
            goto fail;
    }
    capsule = PyCapsule_New(launch, "rnnstream.fused.launch", NULL);
    if (capsule == NULL) goto fail;
    if (launch_submit(launch) < 0) {
        Py_DECREF(capsule);
        PyErr_SetString(PyExc_RuntimeError, "launch(): could not start the runner thread");
        goto fail;
    }
    if (PyCapsule_SetDestructor(capsule, launch_free) < 0) return NULL; /* cannot fail for a valid capsule */
    return capsule;
fail:
    Py_XDECREF(launch->refs);
    PyMem_Free(launch->jobs);
    PyMem_Free(launch->packed_floats);
    PyMem_Free(launch);
    return NULL;
}

static PyObject *launch_done(PyObject *self, PyObject *capsule) {
    (void)self;
    Launch *launch = (Launch *)PyCapsule_GetPointer(capsule, "rnnstream.fused.launch");
    if (launch == NULL) return NULL;
    const int status = atomic_load(&launch->status);
    if (status == LAUNCH_FAILED) return PyErr_NoMemory();
    if (status == LAUNCH_LOST) {
        PyErr_SetString(PyExc_RuntimeError, "this step was launched before the process forked and never ran here");
        return NULL;
    }
    return PyBool_FromLong(status == LAUNCH_DONE);
}

#else

static void launcher_init(void) {}

#endif
