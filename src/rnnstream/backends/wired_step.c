/* model.step's path for a graph the kernel steps whole, in one C call (whole_step.h): wire(), step_wired().
 *
 * fused_wiring.py works out once where each node's x and each graph output live; wire() keeps that here,
 * and step_wired() does per step what its Python twin (Wiring.items, then step_all) does: a new state
 * array, a new output array per Dense node, a Job per node, the jobs run, the outputs (arrays, or
 * views of the new state's columns) returned. Measured on a Zen 4, seed model at batch 1: ~2.5 µs of
 * Python per step fall to ~0.5 µs here.
 */
#define PY_SSIZE_T_CLEAN
#define NO_IMPORT_ARRAY
#include "whole_step.h"

#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#include <numpy/arrayobject.h>

/* Where a tensor lives: nowhere (the kernel reads x in place), a source (the step's inputs, then the
 * Dense nodes' outputs), or columns [lo, hi) of the new state. */
typedef struct {
    enum { IN_PLACE, SOURCE, COLUMNS } kind;
    Py_ssize_t index, lo, hi;
} Place;

typedef struct {
    PyObject *plan;
    Place x;
    Py_ssize_t out; /* its Dense output (a source past the inputs), or -1 */
} WiredNode;

typedef struct {
    Py_ssize_t nodes, inputs, dense, outputs;
    WiredNode node[STEP_ALL_MAX];
    npy_intp dense_units[STEP_ALL_MAX];
    Place output[STEP_ALL_MAX];
    PyObject *refs; /* the plans */
} Wired;

static void wired_free(PyObject *capsule) {
    Wired *wired = (Wired *)PyCapsule_GetPointer(capsule, "rnnstream.fused.wired");
    if (wired == NULL) return;
    Py_XDECREF(wired->refs);
    PyMem_Free(wired);
}

/* None, a source index below `sources`, or a (lo, hi) pair into *place; -1 otherwise (with an exception set
 * where Python raised one). */
static int read_place(PyObject *obj, Place *place, Py_ssize_t sources) {
    if (obj == Py_None) {
        place->kind = IN_PLACE;
        return 0;
    }
    if (PyLong_Check(obj)) {
        place->kind = SOURCE;
        place->index = PyLong_AsSsize_t(obj);
        return place->index < 0 || place->index >= sources ? -1 : 0;
    }
    place->kind = COLUMNS;
    return PyArg_ParseTuple(obj, "nn", &place->lo, &place->hi) && 0 <= place->lo && place->lo <= place->hi ? 0 : -1;
}

const char wire_doc[] =
    "wire(nodes, dense_units, inputs, outputs) -> wired\n\n"
    "Keep a whole step's wiring: nodes = ((plan, x place, dense output or -1), ...), a place None (read in\n"
    "place), a source index (inputs, then Dense outputs) or (lo, hi) columns of the new state.";

PyObject *wire(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *nodes, *units, *outputs;
    Py_ssize_t inputs;
    if (!PyArg_ParseTuple(args, "O!O!nO!", &PyTuple_Type, &nodes, &PyTuple_Type, &units, &inputs, &PyTuple_Type,
                          &outputs))
        return NULL;
    if (PyTuple_GET_SIZE(nodes) > STEP_ALL_MAX || PyTuple_GET_SIZE(units) > STEP_ALL_MAX ||
        PyTuple_GET_SIZE(outputs) > STEP_ALL_MAX || inputs < 0 || inputs > STEP_ALL_MAX) {
        PyErr_SetString(PyExc_ValueError, "wire() takes at most 64 inputs, nodes, Dense nodes and outputs");
        return NULL;
    }
    Wired *wired = PyMem_Calloc(1, sizeof *wired);
    if (wired == NULL) return PyErr_NoMemory();
    wired->nodes = PyTuple_GET_SIZE(nodes);
    wired->inputs = inputs;
    wired->dense = PyTuple_GET_SIZE(units);
    wired->outputs = PyTuple_GET_SIZE(outputs);
    int failed = 0;
    const Py_ssize_t sources = inputs + wired->dense;
    for (Py_ssize_t i = 0; i < wired->nodes && !failed; i++) {
        WiredNode *node = &wired->node[i];
        PyObject *x;
        failed = !PyArg_ParseTuple(PyTuple_GET_ITEM(nodes, i), "OOn", &node->plan, &x, &node->out) ||
                 read_place(x, &node->x, sources) < 0 || node->out >= wired->dense;
    }
    for (Py_ssize_t i = 0; i < wired->dense && !failed; i++)
        failed = (wired->dense_units[i] = PyLong_AsSsize_t(PyTuple_GET_ITEM(units, i))) < 0;
    for (Py_ssize_t i = 0; i < wired->outputs && !failed; i++)
        failed = read_place(PyTuple_GET_ITEM(outputs, i), &wired->output[i], sources) < 0;
    if (failed && !PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "wire(): a place or output out of range");
    wired->refs = failed ? NULL : Py_NewRef(nodes);
    PyObject *capsule = failed ? NULL : PyCapsule_New(wired, "rnnstream.fused.wired", wired_free);
    if (capsule == NULL) {
        Py_XDECREF(wired->refs);
        PyMem_Free(wired);
    }
    return capsule;
}

/* Columns [lo, hi) of every row of new_state, a view of it (as new_state[:, lo:hi]). */
static PyObject *columns(PyArrayObject *new_state, const Place *place) {
    npy_intp dims[2] = {PyArray_DIM(new_state, 0), place->hi - place->lo};
    npy_intp strides[2] = {PyArray_STRIDE(new_state, 0), sizeof(float)};
    PyObject *view = PyArray_NewFromDescr(&PyArray_Type, PyArray_DescrFromType(NPY_FLOAT32), 2, dims, strides,
                                          (float *)PyArray_DATA(new_state) + place->lo, NPY_ARRAY_WRITEABLE, NULL);
    if (view != NULL && PyArray_SetBaseObject((PyArrayObject *)view, Py_NewRef((PyObject *)new_state)) < 0)
        Py_CLEAR(view);
    return view;
}

/* What place holds: a new reference (a view of new_state for columns). */
static PyObject *at(const Place *place, PyObject *const *sources, PyArrayObject *new_state) {
    return place->kind == COLUMNS ? columns(new_state, place) : Py_NewRef(sources[place->index]);
}

/* Whether the kernel reads x as it is: a (B, F) float32 array with contiguous rows. */
static int rows_as_they_are(PyObject *x) {
    if (!PyArray_Check(x)) return 0;
    PyArrayObject *a = (PyArrayObject *)x;
    return PyArray_NDIM(a) == 2 && PyArray_TYPE(a) == NPY_FLOAT32 && PyArray_ISNOTSWAPPED(a) &&
           (PyArray_DIM(a, 0) == 0 || PyArray_DIM(a, 1) <= 1 || PyArray_STRIDE(a, 1) == sizeof(float));
}

/* The jobs over sources into new_state, run; -1 with an exception set. */
static int run_wired(const Wired *wired, PyObject *const *sources, PyObject *state, PyArrayObject *new_state,
                     long threads) {
    Job jobs[STEP_ALL_MAX];
    size_t packed_floats[STEP_ALL_MAX];
    long flops = 0;
    for (Py_ssize_t i = 0; i < wired->nodes; i++) {
        const WiredNode *node = &wired->node[i];
        PyObject *x = node->x.kind == IN_PLACE ? Py_NewRef(Py_None) : at(&node->x, sources, new_state);
        PyObject *out = node->out >= 0 ? sources[wired->inputs + node->out] : Py_None;
        const int built = x == NULL ? -1
                                    : build_job(node->plan, x, state, (PyObject *)new_state, out, threads, &jobs[i],
                                                &packed_floats[i]);
        Py_XDECREF(x); /* a view's data stays alive with new_state */
        if (built < 0) return -1;
        flops += jobs[i].flops;
    }
    return run_jobs(jobs, packed_floats, wired->nodes, flops);
}

const char step_wired_doc[] =
    "step_wired(wired, xs, state, threads) -> (outputs, new_state), or None\n\n"
    "One step of the wired graph over the inputs xs from state: a new state and new outputs. None when an\n"
    "input is not a (B, F) float32 array with contiguous rows (the caller converts it and steps itself).";

PyObject *step_wired(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 4 || !PyList_Check(args[1]) || !PyArray_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "step_wired() takes (wired, xs list, state array, threads)");
        return NULL;
    }
    const Wired *wired = (const Wired *)PyCapsule_GetPointer(args[0], "rnnstream.fused.wired");
    const long threads = PyLong_AsLong(args[3]);
    if (wired == NULL || (threads == -1 && PyErr_Occurred())) return NULL;
    if (PyList_GET_SIZE(args[1]) != wired->inputs) {
        PyErr_Format(PyExc_ValueError, "step_wired() takes %zd inputs", wired->inputs);
        return NULL;
    }
    PyObject *sources[2 * STEP_ALL_MAX];
    for (Py_ssize_t i = 0; i < wired->inputs; i++) {
        sources[i] = PyList_GET_ITEM(args[1], i);
        if (!rows_as_they_are(sources[i])) Py_RETURN_NONE;
    }
    PyArrayObject *state = (PyArrayObject *)args[2];
    if (PyArray_NDIM(state) != 2) {
        PyErr_SetString(PyExc_ValueError, "state must be a (B, S) float32 array");
        return NULL;
    }
    const npy_intp batch = PyArray_DIM(state, 0);
    PyArrayObject *new_state = (PyArrayObject *)PyArray_SimpleNew(2, PyArray_DIMS(state), NPY_FLOAT32);
    Py_ssize_t made = 0; /* Dense outputs allocated */
    int failed = new_state == NULL;
    while (!failed && made < wired->dense) {
        npy_intp dims[2] = {batch, wired->dense_units[made]};
        PyObject *out = PyArray_SimpleNew(2, dims, NPY_FLOAT32);
        if (out == NULL)
            failed = 1;
        else
            sources[wired->inputs + made++] = out;
    }
    PyObject *outputs = failed || run_wired(wired, sources, args[2], new_state, threads) < 0
                            ? NULL
                            : PyList_New(wired->outputs);
    for (Py_ssize_t i = 0; outputs != NULL && i < wired->outputs; i++) {
        PyObject *output = at(&wired->output[i], sources, new_state);
        if (output == NULL) Py_CLEAR(outputs);
        else PyList_SET_ITEM(outputs, i, output);
    }
    for (Py_ssize_t i = 0; i < made; i++) Py_DECREF(sources[wired->inputs + i]);
    PyObject *result = outputs == NULL ? NULL : PyTuple_Pack(2, outputs, (PyObject *)new_state);
    Py_XDECREF(outputs);
    Py_XDECREF(new_state);
    return result;
}
