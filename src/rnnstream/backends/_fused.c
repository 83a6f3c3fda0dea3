/* rnnstream.backends._fused: one fused "matrix product + layer epilogue" step for Dense, SimpleRNN,
 * LSTM and GRU layers, compiled for AVX-512, AVX2 and plain x86-64 (or any CPU), chosen at import.
 *
 * Python calls step(...) once per layer per engine step; the GIL is released while it computes and
 * the work is shared by OpenMP threads. Weights are packed in Python (fused.py), which knows the
 * layout this file expects: panels of 4 vectors of LANES columns, rows [x features, h features].
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

enum { EPI_ACT = 0, EPI_LSTM = 1, EPI_GRU = 2 };
enum { ACT_LINEAR = 0, ACT_TANH = 1, ACT_SIGMOID = 2, ACT_RELU = 3 };

typedef struct {
    int epilogue, activation, batch, panels, k_x, k_h, units, threads;
    const float *weights, *bias, *x, *h, *c;
    float *out, *out_c;
    Py_ssize_t x_stride, h_stride, c_stride, out_stride, out_c_stride; /* in floats */
} Job;

#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,avx512vl,fma")
#define LANES 16
#define MB 6
#define NAME(x) x##_avx512
#include "fused_kernel.h"
#undef LANES
#undef MB
#undef NAME
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define LANES 8
#define MB 2
#define NAME(x) x##_avx2
#include "fused_kernel.h"
#undef LANES
#undef MB
#undef NAME
#pragma GCC pop_options
#endif

#define LANES 4
#define MB 2
#define NAME(x) x##_portable
#include "fused_kernel.h"
#undef LANES
#undef MB
#undef NAME

typedef struct {
    const char *name;
    int lanes;
    void (*run)(const Job *);
} Isa;

static Isa chosen = {"portable", 4, run_portable};

static void choose_isa(void) {
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512vl")) {
        chosen = (Isa){"avx512", 16, run_avx512};
    } else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        chosen = (Isa){"avx2", 8, run_avx2};
    }
#endif
}

/* A 2-D float32 array with contiguous rows: its data pointer and row stride in floats. */
static int take_matrix(PyObject *obj, Py_buffer *view, int writable, const char *what, Py_ssize_t rows,
                       Py_ssize_t cols, const float **data, Py_ssize_t *stride) {
    if (PyObject_GetBuffer(obj, view, PyBUF_STRIDES | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0)) < 0)
        return -1;
    if (view->ndim != 2 || view->itemsize != 4 || strcmp(view->format, "f") != 0 ||
        view->strides[1] != 4 || view->strides[0] % 4 != 0 || view->shape[0] != rows ||
        view->shape[1] != cols) {
        PyErr_Format(PyExc_ValueError, "%s must be a (%zd, %zd) float32 array with contiguous rows", what, rows,
                     cols);
        PyBuffer_Release(view);
        return -1;
    }
    *data = (const float *)view->buf;
    *stride = view->strides[0] / 4;
    return 0;
}

static int take_vector(PyObject *obj, Py_buffer *view, const char *what, Py_ssize_t size, const float **data) {
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return -1;
    if (view->itemsize != 4 || strcmp(view->format, "f") != 0 || view->len != size * 4) {
        PyErr_Format(PyExc_ValueError, "%s must hold %zd contiguous float32 values", what, size);
        PyBuffer_Release(view);
        return -1;
    }
    *data = (const float *)view->buf;
    return 0;
}

PyDoc_STRVAR(step_doc,
             "step(epilogue, activation, weights, bias, panels, k_x, k_h, units, x, h, c, out, out_c, threads)\n\n"
             "out[b] = epilogue(bias + [x[b], h[b]] @ W) for every row b; see fused.py for the layouts.");

static PyObject *step(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 14) {
        PyErr_SetString(PyExc_TypeError, "step() takes 14 arguments");
        return NULL;
    }
    Job job;
    memset(&job, 0, sizeof job);
    long ints[8];
    const int int_args[8] = {0, 1, 4, 5, 6, 7, 13, -1};
    for (int i = 0; int_args[i] >= 0; i++) {
        ints[i] = PyLong_AsLong(args[int_args[i]]);
        if (ints[i] == -1 && PyErr_Occurred()) return NULL;
    }
    job.epilogue = (int)ints[0];
    job.activation = (int)ints[1];
    job.panels = (int)ints[2];
    job.k_x = (int)ints[3];
    job.k_h = (int)ints[4];
    job.units = (int)ints[5];
    job.threads = ints[6] < 1 ? 1 : (int)ints[6];
    if (job.epilogue < EPI_ACT || job.epilogue > EPI_GRU || job.activation < ACT_LINEAR ||
        job.activation > ACT_RELU || job.panels < 0 || job.k_x < 0 || job.k_h < 0 || job.units < 0) {
        PyErr_SetString(PyExc_ValueError, "step(): bad epilogue, activation or size");
        return NULL;
    }
    const int per_panel = job.epilogue == EPI_ACT ? 4 * chosen.lanes : chosen.lanes;
    if ((Py_ssize_t)job.panels * per_panel < job.units ||
        (job.epilogue != EPI_ACT && job.k_h != job.units)) {
        PyErr_SetString(PyExc_ValueError, "step(): panels, units and k_h do not match the epilogue");
        return NULL;
    }
    const int recurrent = job.k_h > 0, lstm = job.epilogue == EPI_LSTM;
    Py_buffer views[7];
    int taken = 0, ok = 0;
    Py_ssize_t batch = -1;
    {
        Py_buffer probe;
        if (PyObject_GetBuffer(args[8], &probe, PyBUF_STRIDES) < 0) return NULL;
        batch = probe.ndim == 2 ? probe.shape[0] : -1;
        PyBuffer_Release(&probe);
    }
    job.batch = (int)batch;
    const float *ignored;
    const Py_ssize_t K = (Py_ssize_t)job.k_x + job.k_h;
    if (take_vector(args[2], &views[taken], "weights", (Py_ssize_t)job.panels * K * 4 * chosen.lanes,
                    &job.weights) < 0)
        goto done;
    taken++;
    if (take_vector(args[3], &views[taken], "bias", (Py_ssize_t)job.panels * 4 * chosen.lanes, &job.bias) < 0)
        goto done;
    taken++;
    if (take_matrix(args[8], &views[taken], 0, "x", batch, job.k_x, &job.x, &job.x_stride) < 0) goto done;
    taken++;
    job.h = job.x;
    if (recurrent) {
        if (take_matrix(args[9], &views[taken], 0, "h", batch, job.k_h, &job.h, &job.h_stride) < 0) goto done;
        taken++;
    }
    if (lstm) {
        if (take_matrix(args[10], &views[taken], 0, "c", batch, job.units, &job.c, &job.c_stride) < 0) goto done;
        taken++;
    }
    if (take_matrix(args[11], &views[taken], 1, "out", batch, job.units, &ignored, &job.out_stride) < 0) goto done;
    job.out = (float *)views[taken].buf;
    taken++;
    if (lstm) {
        if (take_matrix(args[12], &views[taken], 1, "out_c", batch, job.units, &ignored, &job.out_c_stride) < 0)
            goto done;
        job.out_c = (float *)views[taken].buf;
        taken++;
    }
    if (batch > 0) {
        Py_BEGIN_ALLOW_THREADS chosen.run(&job);
        Py_END_ALLOW_THREADS
    }
    ok = 1;
done:
    for (int i = 0; i < taken; i++) PyBuffer_Release(&views[i]);
    if (!ok) return NULL;
    Py_RETURN_NONE;
}

static PyObject *isa(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
    return Py_BuildValue("(si)", chosen.name, chosen.lanes);
}

static PyObject *cpu_count(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
#ifdef _OPENMP
    return PyLong_FromLong(omp_get_num_procs());
#else
    return PyLong_FromLong(1);
#endif
}

static PyMethodDef methods[] = {
    {"step", (PyCFunction)(void (*)(void))step, METH_FASTCALL, step_doc},
    {"isa", isa, METH_NOARGS, "(name, lanes) of the instruction set this CPU runs the kernel with."},
    {"cpu_count", cpu_count, METH_NOARGS, "Processors OpenMP may use (1 without OpenMP)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_fused", "Fused recurrent step kernels.", -1, methods};

PyMODINIT_FUNC PyInit__fused(void) {
    choose_isa();
    return PyModule_Create(&module);
}
