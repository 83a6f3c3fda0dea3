/* A whole step's nodes in one call from Python, on the calling thread.
 *
 * step_all(items, state, new_state, threads) runs the nodes items = ((plan, x or None, out or None), ...)
 * in order, as one step() call each would, checking every array first: model.step's path for a graph
 * the kernel steps whole. bind(items, state, new_state, threads) checks them once and keeps the jobs;
 * run(bound) steps them again and again over the same arrays (StreamModel.stepper); run_from(bound, x,
 * buffer) copies the step's input x into the bound input array first (the stepper's call, in one C call).
 * wire() and step_wired() (wired_step.c) are model.step's path: new arrays and the jobs over them, per step. The GIL is released
 * while the kernel runs when the step is worth it (RELEASE_GIL_MIN_FLOPS).
 */
#ifndef RNNSTREAM_WHOLE_STEP_H
#define RNNSTREAM_WHOLE_STEP_H

#include "kernel.h"

/* _fused.c imports NumPy's C API; wired_step.c uses it too, under this name (NO_IMPORT_ARRAY there) */
#define PY_ARRAY_UNIQUE_SYMBOL rnnstream_fused_numpy_api

#pragma GCC visibility push(hidden)

#define RELEASE_GIL_MIN_FLOPS 100000L /* below this, releasing and retaking the GIL costs more than it frees */
#define STEP_ALL_MAX 64                /* nodes step_all() and step_wired() take without allocating */

/* The Job for plan over every row of state (B, S), or -1 with an exception set (_fused.c). x: (B, k_x) or
 * None to read new_state's columns; out: (B, units) for a Dense node. *packed_floats: the blocked path's
 * scratch floats the running thread must provide (0: none). */
int build_job(PyObject *plan_obj, PyObject *x_obj, PyObject *state_obj, PyObject *new_obj, PyObject *out_obj,
              long threads, Job *job, size_t *packed_floats);

/* Jobs for items = ((plan, x or None, out or None), ...) over state -> new_state; *flops: their FLOPs. */
int build_jobs(PyObject *items, PyObject *state, PyObject *new_state, long threads, Job *jobs, size_t *packed_floats,
               long *flops);

/* Run count jobs in order on this thread (GIL released when they are worth it); -1: out of memory. */
int run_jobs(Job *jobs, const size_t *packed_floats, Py_ssize_t count, long flops);

extern const char bind_doc[], run_doc[], run_from_doc[], step_all_doc[], wire_doc[], step_wired_doc[];
PyObject *bind_step(PyObject *self, PyObject *args);
PyObject *run_bound(PyObject *self, PyObject *capsule);
PyObject *run_from(PyObject *self, PyObject *const *args, Py_ssize_t nargs);
PyObject *step_all(PyObject *self, PyObject *const *args, Py_ssize_t nargs);
PyObject *wire(PyObject *self, PyObject *args); /* wired_step.c */
PyObject *step_wired(PyObject *self, PyObject *const *args, Py_ssize_t nargs);

#pragma GCC visibility pop

#endif
