"""Builds the fused step kernel (rnnstream.backends._fused); everything else is in pyproject.toml.

The extension is optional: without a C compiler the install still succeeds and rnnstream uses its
NumPy backend. Its helper threads and the runner thread of launch() are POSIX threads (work_pool.c,
launcher.c); elsewhere it runs on one thread and has no launch().
"""

import numpy
from setuptools import Extension, setup

kernel = Extension(
    "rnnstream.backends._fused",
    sources=[
        "src/rnnstream/backends/_fused.c",
        "src/rnnstream/backends/kernel.c",
        "src/rnnstream/backends/work_pool.c",
        "src/rnnstream/backends/launcher.c",
        "src/rnnstream/backends/machine.c",
        "src/rnnstream/backends/whole_step.c",
        "src/rnnstream/backends/wired_step.c",
    ],
    depends=[
        "src/rnnstream/backends/kernel.h",
        "src/rnnstream/backends/fused_kernel.h",
        "src/rnnstream/backends/fused_accumulate.h",
        "src/rnnstream/backends/gate_math.h",
        "src/rnnstream/backends/fused_split.h",
        "src/rnnstream/backends/fused_low.h",
        "src/rnnstream/backends/fused_narrow.h",
        "src/rnnstream/backends/dot_kernel.h",
        "src/rnnstream/backends/int8_kernel.h",
        "src/rnnstream/backends/int8_accumulate.h",
        "src/rnnstream/backends/int8_rows.h",
        "src/rnnstream/backends/amx_kernel.h",
        "src/rnnstream/backends/work_pool.h",
        "src/rnnstream/backends/launcher.h",
        "src/rnnstream/backends/machine.h",
        "src/rnnstream/backends/whole_step.h",
    ],
    include_dirs=[numpy.get_include()],
    extra_compile_args=["-O3", "-Wall", "-pthread"],
    extra_link_args=["-pthread"],
    optional=True,
)

setup(ext_modules=[kernel])
