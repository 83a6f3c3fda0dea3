/* What the kernel runs on this machine, for Python (machine.c): the rows MACHINE_METHODS adds to _fused's methods. */
#ifndef RNNSTREAM_MACHINE_H
#define RNNSTREAM_MACHINE_H

#include <Python.h>

#pragma GCC visibility push(hidden)

PyObject *machine_isa(PyObject *self, PyObject *unused);
PyObject *machine_bf16_dot(PyObject *self, PyObject *unused);
PyObject *machine_bf16_amx(PyObject *self, PyObject *unused);
PyObject *machine_bf16_dot_fast(PyObject *self, PyObject *unused);
PyObject *machine_int8(PyObject *self, PyObject *unused);
PyObject *machine_cpu_count(PyObject *self, PyObject *unused);
PyObject *machine_spin_us(PyObject *self, PyObject *args);

#pragma GCC visibility pop

#define MACHINE_METHODS                                                                                              \
    {"isa", machine_isa, METH_NOARGS, "(name, lanes) of the instruction set this CPU runs the kernel with."},         \
    {"bf16_dot", machine_bf16_dot, METH_NOARGS, "Whether this CPU runs make_plan(dot=True) plans (AVX512_BF16)."},   \
    {"bf16_amx", machine_bf16_amx, METH_NOARGS,                                                                      \
     "Whether dot plans step batches of 8 rows and more on AMX tiles (RNNSTREAM_AMX=0: never)."},                    \
    {"bf16_dot_fast", machine_bf16_dot_fast, METH_NOARGS,                                                            \
     "Whether dot plans step faster than widened bfloat16 weights here (AMX, or an AMD CPU's vdpbf16ps)."},          \
    {"int8", machine_int8, METH_NOARGS, "Whether this CPU runs plans of int8 weights (AVX512_VNNI, or AVX2)."},      \
    {"cpu_count", machine_cpu_count, METH_NOARGS, "Processors this process may run on."},                            \
    {"spin_us", machine_spin_us, METH_VARARGS,                                                                       \
     "spin_us([us]) -> how long (µs) idle helper threads poll for the next task before they sleep; sets it first."},

#endif
