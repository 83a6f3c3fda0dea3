/* What the kernel runs on this machine (machine.h): the instruction set chosen at import, its lower-precision
 * paths, the processors this process may use, and how long idle helper threads poll. */
#define PY_SSIZE_T_CLEAN
#include "machine.h"

#if defined(__unix__) || defined(__APPLE__)
#include <sched.h>
#include <unistd.h>
#endif

#include "kernel.h"
#include "work_pool.h"

PyObject *machine_isa(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
    return Py_BuildValue("(si)", chosen.name, chosen.lanes);
}

PyObject *machine_bf16_dot(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
    return PyBool_FromLong(chosen.run_dot != NULL);
}

PyObject *machine_bf16_amx(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
    return PyBool_FromLong(chosen.run_dot != NULL && chosen.amx);
}

PyObject *machine_bf16_dot_fast(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
    return PyBool_FromLong(chosen.run_dot != NULL && chosen.dot_fast);
}

PyObject *machine_int8(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
    return PyBool_FromLong(chosen.run_int8 != NULL);
}

PyObject *machine_spin_us(PyObject *self, PyObject *args) {
    (void)self;
    long us = -1;
    if (!PyArg_ParseTuple(args, "|l", &us)) return NULL;
    return PyLong_FromLong(pool_spin_us(us));
}

PyObject *machine_cpu_count(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
#if defined(__linux__)
    cpu_set_t usable;
    if (sched_getaffinity(0, sizeof usable, &usable) == 0) return PyLong_FromLong(CPU_COUNT(&usable));
#endif
#if defined(__unix__) || defined(__APPLE__)
    const long online = sysconf(_SC_NPROCESSORS_ONLN);
    return PyLong_FromLong(online > 0 ? online : 1);
#else
    return PyLong_FromLong(1);
#endif
}
