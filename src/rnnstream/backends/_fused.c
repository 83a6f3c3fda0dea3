/* rnnstream.backends._fused: one fused "matrix product + layer epilogue" step for Dense, SimpleRNN,
 * LSTM and GRU layers, compiled for AVX-512, AVX2 and plain x86-64 (or any CPU), chosen at import.
 *
 * This file is the Python module. Python makes one plan per node (make_plan: packed weights, sizes,
 * state columns) and calls step(plan, ...) once per node per engine step; the GIL is released while
 * the kernel (kernel.c, fused_kernel.h) computes and the work is shared with helper threads
 * (work_pool.c). launch() runs a whole step's nodes on a runner thread instead and signals a file
 * descriptor when done (launcher.c). Weights are packed in Python (packing.py), which knows the layout
 * the kernel expects: panels of 4 vectors of LANES columns, rows [x features, h features].
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdlib.h>
#include <string.h>
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#include "whole_step.h" /* PY_ARRAY_UNIQUE_SYMBOL: wired_step.c shares this file's NumPy C API */
#include <numpy/arrayobject.h>

#include "kernel.h"
#include "launcher.h"
#include "machine.h"
#include "whole_step.h"
#include "work_pool.h"

/* ---- plans: one fused node, its packed weights and where it reads and writes -------------------- */

typedef struct {
    int epilogue, activation, panels, k_x, k_h, units;
    Py_ssize_t start; /* recurrent: its state columns start here (h, then c for an LSTM) */
    Py_ssize_t x_col; /* >= 0: x is new_state[:, x_col : x_col + k_x]; -1: x is passed */
    long row_flops;   /* FLOPs per batch row, to decide whether a second thread pays */
    int weight_type;  /* 0 (float32), BF16_WIDEN, BF16_DOT or INT8_DOT (kernel.h) */
    /* The plan's own copies, 64-byte aligned: a vector load never straddles two cache lines (NumPy's
     * 16-byte alignment made half of them do so: ~20% of a large step). */
    void *weights;
    float *bias;
    int32_t *quant; /* INT8_DOT: the columns' scales and sums (int8_kernel.h); else NULL */
    float *columns; /* a narrow layer's weights by unit, k-contiguous (kernel.h: NARROW_UNITS); else NULL */
} Plan;

/* A node's step shares its work with helper threads from this many FLOPs (~0.5 µs of one core; work_pool.h): a small
 * batch's step reads its weights from two cores' caches (seed model, batch 1, 2-core Zen 4: 14.2 µs on one thread, 8.7
 * on two). With one row only the hand-offs are added, and between cores ~150 ns apart (a 2-core Xeon VM) they cost
 * more below 200 kFLOP (the stepper: 10.0-10.3 µs sharing the 83-kFLOP LSTM(100), 8.5-8.7 not); more rows were
 * written by both cores, and the Dense(1) at 256 rows (102 kFLOP) on the caller alone cost the step 3%. */
#define PARALLEL_MIN_FLOPS 50000L
#define PARALLEL_MIN_FLOPS_ONE_ROW 200000L

static void plan_free(PyObject *capsule) {
    Plan *plan = (Plan *)PyCapsule_GetPointer(capsule, "rnnstream.fused.plan");
    if (plan == NULL) return;
    free(plan->weights);
    free(plan->bias);
    free(plan->quant);
    free(plan->columns);
    PyMem_Free(plan);
}

/* A Dense or SimpleRNN layer of at most NARROW_UNITS units with float32 weights: its panel's columns (unit j at
 * k·4·lanes + j) copied out k-contiguous, unit by unit, once (fused_narrow.h reads them). NULL: not such a layer,
 * or out of memory (*failed set). */
static float *narrow_columns(const Plan *p, int *failed) {
    const size_t K = (size_t)p->k_x + (size_t)p->k_h, lanes = (size_t)chosen.lanes;
    if (p->epilogue != EPI_ACT || p->weight_type != 0 || p->units > NARROW_UNITS || p->units < 1 || K == 0)
        return NULL;
    float *columns = aligned_alloc(64, ((size_t)p->units * K * sizeof(float) + 63) / 64 * 64);
    if (columns == NULL) {
        *failed = 1;
        return NULL;
    }
    const float *panel = p->weights;
    for (size_t j = 0; j < (size_t)p->units; j++)
        for (size_t k = 0; k < K; k++) columns[j * K + k] = panel[k * 4 * lanes + j];
    return columns;
}

/* A 64-byte aligned copy of a contiguous array, in whole lines (NULL when out of memory). */
static void *aligned_copy(PyArrayObject *a) {
    const size_t bytes = (size_t)PyArray_NBYTES(a);
    void *copy = aligned_alloc(64, bytes / 64 * 64 + 64);
    if (copy != NULL) memcpy(copy, PyArray_DATA(a), bytes);
    return copy;
}

static int is_floats(PyObject *obj, int ndim) {
    return PyArray_Check(obj) && PyArray_TYPE((PyArrayObject *)obj) == NPY_FLOAT32 &&
           PyArray_NDIM((PyArrayObject *)obj) == ndim;
}

/* A contiguous 1-d array of `type` with `size` elements. */
static int is_flat(PyObject *obj, int type, Py_ssize_t size) {
    PyArrayObject *a = (PyArrayObject *)obj;
    return PyArray_Check(obj) && PyArray_TYPE(a) == type && PyArray_NDIM(a) == 1 && PyArray_IS_C_CONTIGUOUS(a) &&
           PyArray_SIZE(a) == size;
}

/* p->weight_type from the weights' dtype (and dot), once weights (and quant) fit the plan's sizes. */
static int check_weights(Plan *p, PyObject *weights, int dot, PyObject *quant) {
    const int type = PyArray_Check(weights) ? PyArray_TYPE((PyArrayObject *)weights) : -1;
    const Py_ssize_t lanes = chosen.lanes, K = (Py_ssize_t)p->k_x + p->k_h;
    p->weight_type = type == NPY_INT8 ? INT8_DOT : type == NPY_UINT16 ? (dot ? BF16_DOT : BF16_WIDEN) : 0;
    if ((dot && chosen.run_dot == NULL) || (p->weight_type == INT8_DOT && chosen.run_int8 == NULL)) {
        PyErr_Format(PyExc_ValueError, "make_plan(): this CPU (or RNNSTREAM_KERNEL_ISA) has no %s",
                     dot ? "AVX512_BF16" : "int8 path (AVX512_VNNI where it runs AVX-512, else AVX2)");
        return -1;
    }
    if (p->weight_type == INT8_DOT && (p->k_x > INT8_MAX_ROWS || p->k_h > INT8_MAX_ROWS)) {
        PyErr_Format(PyExc_ValueError, "make_plan(): int8 sums overflow past %d inputs (x or h) to a layer",
                     INT8_MAX_ROWS);
        return -1;
    }
    /* BF16_DOT: each part padded to even rows, then zero rows up to whole chunks (kernel.h: dot_row_words);
     * INT8_DOT: each part padded to whole quads (int8_row_words) */
    const Py_ssize_t rows = p->weight_type == BF16_DOT  ? 2 * (Py_ssize_t)dot_row_words(p->k_x, p->k_h)
                            : p->weight_type == INT8_DOT ? 4 * (Py_ssize_t)int8_row_words(p->k_x, p->k_h)
                                                         : K;
    const Py_ssize_t size = (Py_ssize_t)p->panels * rows * 4 * lanes;
    if ((dot && p->weight_type != BF16_DOT) || !is_flat(weights, type, size) ||
        (type != NPY_FLOAT32 && type != NPY_UINT16 && type != NPY_INT8)) {
        PyErr_Format(PyExc_ValueError, "weights must be %zd contiguous %s values", size,
                     dot ? "uint16 bfloat16" : "float32 (or uint16 bfloat16, or int8)");
        return -1;
    }
    const Py_ssize_t quant_size = p->panels * 16 * lanes;
    if (p->weight_type == INT8_DOT ? !is_flat(quant, NPY_INT32, quant_size) : quant != Py_None) {
        PyErr_Format(PyExc_ValueError, "quant must be %zd contiguous int32 values with int8 weights, else None",
                     quant_size);
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(make_plan_doc,
             "make_plan(epilogue, activation, weights, bias, panels, k_x, k_h, units, start, x_col, dot=False,"
             " quant=None) -> plan\n\n"
             "Check packed weights once and keep them with the node's sizes and state columns. weights:\n"
             "float32, uint16 for bfloat16 weights (the high halves of float32 values), or int8 (needs int8());\n"
             "dot: the uint16 weights are in row pairs and the kernel rounds the rows to bfloat16 too (needs\n"
             "bf16_dot()); quant: with int8 weights, their columns' scales and sums (packing.int8_quads).");

static PyObject *make_plan(PyObject *self, PyObject *args) {
    (void)self;
    Plan p;
    memset(&p, 0, sizeof p);
    PyObject *weights, *bias, *quant = Py_None;
    int dot = 0;
    if (!PyArg_ParseTuple(args, "iiOOiiiinn|pO", &p.epilogue, &p.activation, &weights, &bias, &p.panels, &p.k_x,
                          &p.k_h, &p.units, &p.start, &p.x_col, &dot, &quant))
        return NULL;
    const int lanes = chosen.lanes, per_panel = p.epilogue == EPI_ACT ? 4 * lanes : lanes;
    const Py_ssize_t K = (Py_ssize_t)p.k_x + p.k_h;
    if (p.epilogue < EPI_ACT || p.epilogue > EPI_GRU || p.activation < ACT_LINEAR || p.activation > ACT_RELU ||
        p.panels < 0 || p.k_x < 0 || p.k_h < 0 || p.units < 0 || p.start < 0 || p.x_col < -1 ||
        (Py_ssize_t)p.panels * per_panel < p.units || (p.epilogue != EPI_ACT && p.k_h != p.units)) {
        PyErr_SetString(PyExc_ValueError, "make_plan(): epilogue, activation and sizes do not fit together");
        return NULL;
    }
    if (check_weights(&p, weights, dot, quant) < 0) return NULL;
    if (!is_floats(bias, 1) || !PyArray_IS_C_CONTIGUOUS((PyArrayObject *)bias) ||
        PyArray_SIZE((PyArrayObject *)bias) != (Py_ssize_t)p.panels * 4 * lanes) {
        PyErr_Format(PyExc_ValueError, "bias must be %zd contiguous float32 values", (Py_ssize_t)p.panels * 4 * lanes);
        return NULL;
    }
    p.row_flops = 2L * p.panels * (long)K * 4 * lanes;
    Plan *plan = PyMem_Malloc(sizeof *plan);
    if (plan == NULL) return PyErr_NoMemory();
    *plan = p;
    plan->weights = aligned_copy((PyArrayObject *)weights);
    plan->bias = (float *)aligned_copy((PyArrayObject *)bias);
    plan->quant = quant != Py_None ? (int32_t *)aligned_copy((PyArrayObject *)quant) : NULL;
    int failed = 0;
    plan->columns = plan->weights != NULL ? narrow_columns(plan, &failed) : NULL;
    PyObject *capsule = NULL;
    if (plan->weights == NULL || plan->bias == NULL || (quant != Py_None && plan->quant == NULL) || failed)
        PyErr_NoMemory();
    else
        capsule = PyCapsule_New(plan, "rnnstream.fused.plan", plan_free);
    if (capsule == NULL) {
        free(plan->weights);
        free(plan->bias);
        free(plan->quant);
        free(plan->columns);
        PyMem_Free(plan);
    }
    return capsule;
}

/* A (rows, >= cols) float32 array with contiguous rows: its data and row stride in floats. */
static int matrix(PyObject *obj, const char *what, npy_intp rows, npy_intp cols, int exact, int writable,
                  float **data, Py_ssize_t *stride) {
    PyArrayObject *a = (PyArrayObject *)obj;
    /* A stride along an axis of length 0 or 1 is never used, and NumPy may leave it at any value (no row: none
     * is used). */
    if (!is_floats(obj, 2) || PyArray_DIM(a, 0) != rows || PyArray_DIM(a, 1) < cols ||
        (exact && PyArray_DIM(a, 1) != cols) ||
        (PyArray_DIM(a, 0) > 0 && PyArray_DIM(a, 1) > 1 && PyArray_STRIDE(a, 1) != 4) ||
        (PyArray_DIM(a, 0) > 1 && (PyArray_STRIDE(a, 0) % 4 != 0 || PyArray_STRIDE(a, 0) < 0))) {
        PyErr_Format(PyExc_ValueError, "%s must be a (%zd, %s%zd) float32 array with contiguous rows", what,
                     (Py_ssize_t)rows, exact ? "" : ">= ", (Py_ssize_t)cols);
        return -1;
    }
    if (writable && !PyArray_ISWRITEABLE(a)) {
        PyErr_Format(PyExc_ValueError, "%s must be writable", what);
        return -1;
    }
    *data = (float *)PyArray_DATA(a);
    *stride = PyArray_DIM(a, 0) > 1 ? PyArray_STRIDE(a, 0) / 4 : 0;
    return 0;
}

/* whole_step.h */
int build_job(PyObject *plan_obj, PyObject *x_obj, PyObject *state_obj, PyObject *new_obj, PyObject *out_obj,
                     long threads, Job *job, size_t *packed_floats) {
    Plan *plan = (Plan *)PyCapsule_GetPointer(plan_obj, "rnnstream.fused.plan");
    if (plan == NULL) return -1;
    if (!is_floats(state_obj, 2)) {
        PyErr_SetString(PyExc_ValueError, "state must be a (B, S) float32 array");
        return -1;
    }
    const npy_intp batch = PyArray_DIM((PyArrayObject *)state_obj, 0);
    const int recurrent = plan->k_h > 0, lstm = plan->epilogue == EPI_LSTM;
    const Py_ssize_t state_cols = plan->start + (recurrent ? (lstm ? 2 : 1) * (Py_ssize_t)plan->units : 0);
    float *state, *new_state, *x, *out;
    Py_ssize_t state_stride, new_stride;
    if (matrix(state_obj, "state", batch, state_cols, 0, 0, &state, &state_stride) < 0 ||
        matrix(new_obj, "new_state", batch, state_cols, 0, 1, &new_state, &new_stride) < 0)
        return -1;
    memset(job, 0, sizeof *job);
    if (plan->x_col >= 0) {
        if (PyArray_DIM((PyArrayObject *)new_obj, 1) < plan->x_col + plan->k_x) {
            PyErr_SetString(PyExc_ValueError, "new_state has fewer columns than the plan reads x from");
            return -1;
        }
        job->x = new_state + plan->x_col;
        job->x_stride = new_stride;
    } else {
        if (matrix(x_obj, "x", batch, plan->k_x, 1, 0, &x, &job->x_stride) < 0) return -1;
        job->x = x;
    }
    if (recurrent) {
        job->h = state + plan->start;
        job->h_stride = state_stride;
        job->out = new_state + plan->start;
        job->out_stride = new_stride;
        if (lstm) {
            job->c = state + plan->start + plan->units;
            job->c_stride = state_stride;
            job->out_c = new_state + plan->start + plan->units;
            job->out_c_stride = new_stride;
        }
    } else {
        if (matrix(out_obj, "out", batch, plan->units, 1, 1, &out, &job->out_stride) < 0) return -1;
        job->h = job->x;
        job->out = out;
    }
    job->epilogue = plan->epilogue;
    job->activation = plan->activation;
    job->batch = (int)batch;
    job->panels = plan->panels;
    job->k_x = plan->k_x;
    job->k_h = plan->k_h;
    job->units = plan->units;
    job->weights = plan->weights;
    job->weight_type = plan->weight_type;
    job->quant = plan->quant;
    job->bias = plan->bias;
    const int K = plan->k_x + plan->k_h;
    const int narrow = plan->columns != NULL && batch >= NARROW_MIN_BATCH;
    job->columns = narrow ? plan->columns : NULL;
    const long row_flops = narrow ? 2L * K * plan->units : plan->row_flops; /* a narrow Job's dot products */
    const long share_from = batch == 1 ? PARALLEL_MIN_FLOPS_ONE_ROW : PARALLEL_MIN_FLOPS;
    job->threads = threads > 1 && batch * row_flops >= share_from ? (int)threads : 1;
    job->flops = (long)batch * row_flops;
    if (plan->weight_type == BF16_DOT) /* the rows as bfloat16 pairs, in whole blocks of AMX_ROWS */
        *packed_floats =
            (size_t)(batch + AMX_ROWS - 1) / AMX_ROWS * AMX_ROWS * (size_t)dot_row_words(plan->k_x, plan->k_h);
    else if (plan->weight_type == INT8_DOT) /* the rows as 8-bit quads, then two scales per row */
        *packed_floats = (size_t)batch * (size_t)(int8_row_words(plan->k_x, plan->k_h) + 2);
    else if (narrow)
        *packed_floats = 0;
    else
        *packed_floats = chosen.blocked && batch >= BR && K > 0 ? (size_t)(batch + BR - 1) / BR * BR * K : 0;
    return 0;
}

PyDoc_STRVAR(step_doc,
             "step(plan, x, state, new_state, out, threads)\n\n"
             "One fused node for every row of state (B, S). x: (B, k_x) or None to read new_state's columns;\n"
             "a recurrent node writes its new h (and c) into new_state, a Dense node into out (B, units).");

static PyObject *step(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "step() takes 6 arguments");
        return NULL;
    }
    long threads = PyLong_AsLong(args[5]);
    if (threads == -1 && PyErr_Occurred()) return NULL;
    Job job;
    size_t packed_floats;
    if (build_job(args[0], args[1], args[2], args[3], args[4], threads, &job, &packed_floats) < 0) return NULL;
    if (packed_floats > 0 && (job.packed = scratch_for(packed_floats)) == NULL) return PyErr_NoMemory();
    if (job.flops >= RELEASE_GIL_MIN_FLOPS) {
        Py_BEGIN_ALLOW_THREADS run_job(&job);
        Py_END_ALLOW_THREADS
    } else if (job.batch > 0) {
        run_job(&job);
    }
    Py_RETURN_NONE;
}

/* ---- launch(): a whole step's nodes on the runner thread (launcher.h) --------------------------- */

#if HAVE_LAUNCHER

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
    long flops;
    if (build_jobs(PyTuple_GET_ITEM(launch->refs, 0), state, new_state, threads, launch->jobs, launch->packed_floats,
                   &flops) < 0)
        goto fail;
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

#endif

static PyMethodDef methods[] = {
    {"make_plan", make_plan, METH_VARARGS, make_plan_doc},
    {"step", (PyCFunction)(void (*)(void))step, METH_FASTCALL, step_doc},
#if HAVE_LAUNCHER
    {"launch", launch, METH_VARARGS, launch_doc},
    {"done", launch_done, METH_O, "done(launched) -> True once its steps have run (then its arrays are ready)."},
#endif
    {"bind", bind_step, METH_VARARGS, bind_doc},
    {"run", run_bound, METH_O, run_doc},
    {"run_from", (PyCFunction)(void (*)(void))run_from, METH_FASTCALL, run_from_doc},
    {"step_all", (PyCFunction)(void (*)(void))step_all, METH_FASTCALL, step_all_doc},
    {"wire", wire, METH_VARARGS, wire_doc},
    {"step_wired", (PyCFunction)(void (*)(void))step_wired, METH_FASTCALL, step_wired_doc},
    MACHINE_METHODS
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_fused", "Fused recurrent step kernels.", -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fused(void) {
    import_array();
    choose_isa();
    pool_init();
    launcher_init();
    return PyModule_Create(&module);
}
