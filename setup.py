"""Builds the fused step kernel (rnnstream.backends._fused); everything else is in pyproject.toml.

The extension is optional: without a C compiler the install still succeeds and rnnstream uses its
NumPy backend. OpenMP is used when the compiler has it (gcc does).
"""

import numpy
from setuptools import Extension, setup

kernel = Extension(
    "rnnstream.backends._fused",
    sources=["src/rnnstream/backends/_fused.c"],
    depends=["src/rnnstream/backends/fused_kernel.h"],
    include_dirs=[numpy.get_include()],
    extra_compile_args=["-O3", "-fopenmp", "-Wall"],
    extra_link_args=["-fopenmp"],
    optional=True,
)

setup(ext_modules=[kernel])
