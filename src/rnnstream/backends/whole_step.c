/* A whole step's nodes in one call (whole_step.h): step_all(), bind() and run(). */
#define PY_SSIZE_T_CLEAN
#include "whole_step.h"

#include <string.h>

int build_jobs(PyObject *items, PyObject *state, PyObject *new_state, long threads, Job *jobs, size_t *packed_floats,
               long *flops) {
    *flops = 0;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(items); i++) {
        PyObject *item = PyTuple_GET_ITEM(items, i);
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 3) {
            PyErr_SetString(PyExc_TypeError, "each item is a (plan, x, out) tuple");
            return -1;
        }
        if (build_job(PyTuple_GET_ITEM(item, 0), PyTuple_GET_ITEM(item, 1), state, new_state,
                      PyTuple_GET_ITEM(item, 2), threads, &jobs[i], &packed_floats[i]) < 0)
            return -1;
        *flops += jobs[i].flops;
    }
    return 0;
}

int run_jobs(Job *jobs, const size_t *packed_floats, Py_ssize_t count, long flops) {
    size_t most = 0; /* one buffer for every job (they run one after another): the largest they need */
    for (Py_ssize_t i = 0; i < count; i++) most = packed_floats[i] > most ? packed_floats[i] : most;
    float *packed = most > 0 ? scratch_for(most) : NULL;
    if (most > 0 && packed == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < count; i++) jobs[i].packed = packed_floats[i] > 0 ? packed : NULL;
    if (flops >= RELEASE_GIL_MIN_FLOPS) {
        Py_BEGIN_ALLOW_THREADS for (Py_ssize_t i = 0; i < count; i++) if (jobs[i].batch > 0) run_job(&jobs[i]);
        Py_END_ALLOW_THREADS
    } else {
        for (Py_ssize_t i = 0; i < count; i++)
            if (jobs[i].batch > 0) run_job(&jobs[i]);
    }
    return 0;
}

typedef struct {
    Job *jobs;
    size_t *packed_floats;
    Py_ssize_t count;
    long flops;
    PyObject *refs; /* the items and both states: every array the jobs point into */
} Bound;

static void bound_free(PyObject *capsule) {
    Bound *bound = (Bound *)PyCapsule_GetPointer(capsule, "rnnstream.fused.bound");
    if (bound == NULL) return;
    Py_XDECREF(bound->refs);
    PyMem_Free(bound->jobs);
    PyMem_Free(bound->packed_floats);
    PyMem_Free(bound);
}

const char bind_doc[] =
    "bind(items, state, new_state, threads) -> bound\n\n"
    "Check the nodes items = ((plan, x or None, out or None), ...) over these arrays once, as step()\n"
    "would, and keep them: run(bound) then steps them in order, reading and writing the same arrays.";

PyObject *bind_step(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *items, *state, *new_state;
    long threads;
    if (!PyArg_ParseTuple(args, "O!OOl", &PyTuple_Type, &items, &state, &new_state, &threads)) return NULL;
    const Py_ssize_t count = PyTuple_GET_SIZE(items);
    Bound *bound = PyMem_Calloc(1, sizeof *bound);
    if (bound == NULL) return PyErr_NoMemory();
    bound->count = count;
    bound->jobs = PyMem_Calloc(count > 0 ? (size_t)count : 1, sizeof *bound->jobs);
    bound->packed_floats = PyMem_Calloc(count > 0 ? (size_t)count : 1, sizeof *bound->packed_floats);
    bound->refs = PyTuple_Pack(3, items, state, new_state);
    PyObject *capsule = NULL;
    if (bound->jobs == NULL || bound->packed_floats == NULL || bound->refs == NULL) {
        if (!PyErr_Occurred()) PyErr_NoMemory();
    } else if (build_jobs(items, state, new_state, threads, bound->jobs, bound->packed_floats, &bound->flops) == 0) {
        capsule = PyCapsule_New(bound, "rnnstream.fused.bound", bound_free);
    }
    if (capsule == NULL) {
        Py_XDECREF(bound->refs);
        PyMem_Free(bound->jobs);
        PyMem_Free(bound->packed_floats);
        PyMem_Free(bound);
    }
    return capsule;
}

const char run_doc[] = "run(bound): the bound nodes' step, on the calling thread.";

PyObject *run_bound(PyObject *self, PyObject *capsule) {
    (void)self;
    Bound *bound = (Bound *)PyCapsule_GetPointer(capsule, "rnnstream.fused.bound");
    if (bound == NULL || run_jobs(bound->jobs, bound->packed_floats, bound->count, bound->flops) < 0) return NULL;
    Py_RETURN_NONE;
}

/* Whether two buffers hold the same shape (their ndim and each size). */
static int same_shape(const Py_buffer *a, const Py_buffer *b) {
    if (a->ndim != b->ndim) return 0;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return 0;
    return 1;
}

const char run_from_doc[] =
    "run_from(bound, x, buffer) -> bool\n\n"
    "Copy x into the bound input array buffer and run(bound), when x is a C-contiguous float32 array of\n"
    "buffer's shape; else False, and nothing is done (the caller checks and converts x itself).";

PyObject *run_from(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "run_from() takes (bound, x, buffer)");
        return NULL;
    }
    Bound *bound = (Bound *)PyCapsule_GetPointer(args[0], "rnnstream.fused.bound");
    if (bound == NULL) return NULL;
    Py_buffer x, into;
    if (!PyObject_CheckBuffer(args[1]) || PyObject_GetBuffer(args[1], &x, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        PyErr_Clear(); /* not an array this path takes: the caller's general path converts or refuses it */
        Py_RETURN_FALSE;
    }
    if (PyObject_GetBuffer(args[2], &into, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE | PyBUF_FORMAT) < 0) {
        PyBuffer_Release(&x);
        return NULL;
    }
    const int fits = strcmp(x.format, "f") == 0 && strcmp(into.format, "f") == 0 && same_shape(&x, &into);
    if (fits) memcpy(into.buf, x.buf, (size_t)into.len);
    PyBuffer_Release(&x);
    PyBuffer_Release(&into);
    if (!fits) Py_RETURN_FALSE;
    if (run_jobs(bound->jobs, bound->packed_floats, bound->count, bound->flops) < 0) return NULL;
    Py_RETURN_TRUE;
}


const char step_all_doc[] =
    "step_all(items, state, new_state, threads)\n\n"
    "step() for each of items = ((plan, x or None, out or None), ...) in order, in one call.";

PyObject *step_all(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 4 || !PyTuple_Check(args[0]) || PyTuple_GET_SIZE(args[0]) > STEP_ALL_MAX) {
        PyErr_SetString(PyExc_TypeError, "step_all() takes (items, state, new_state, threads), at most 64 items");
        return NULL;
    }
    const long threads = PyLong_AsLong(args[3]);
    if (threads == -1 && PyErr_Occurred()) return NULL;
    Job jobs[STEP_ALL_MAX];
    size_t packed_floats[STEP_ALL_MAX];
    long flops;
    const Py_ssize_t count = PyTuple_GET_SIZE(args[0]);
    if (build_jobs(args[0], args[1], args[2], threads, jobs, packed_floats, &flops) < 0 ||
        run_jobs(jobs, packed_floats, count, flops) < 0)
        return NULL;
    Py_RETURN_NONE;
}
