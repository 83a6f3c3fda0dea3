"""The arithmetic limit names the BLAS kernel its product ran on, and says when OPENBLAS_CORETYPE chose it."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from rnnstream.bench import limit

pytest.importorskip("threadpoolctl")


def _blas_in_a_process(**environment: str) -> str:
    """limit.blas() in a fresh process (OpenBLAS reads its environment once, as it loads) without OPENBLAS_*
    variables but ``environment``'s."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OPENBLAS_")}
    code = "import numpy; from rnnstream.bench import limit; print(limit.blas())"
    done = subprocess.run([sys.executable, "-c", code], env={**clean, **environment}, capture_output=True, text=True,
                          check=True, timeout=60)  # fmt: skip
    return done.stdout.strip()


OPENBLAS = limit.blas().startswith("OpenBLAS")


def test_the_library_kernel_and_threads_of_this_process_are_named() -> None:
    text = limit.blas()
    assert " thread" in text and (not OPENBLAS or "kernel" in text)


@pytest.mark.skipif(not OPENBLAS or platform.machine() not in ("x86_64", "AMD64"), reason="OpenBLAS's x86-64 kernels")
def test_a_kernel_forced_by_openblas_coretype_is_said() -> None:
    forced = _blas_in_a_process(OPENBLAS_CORETYPE="Haswell", OPENBLAS_NUM_THREADS="1")
    assert forced.endswith("its Haswell kernel, 1 thread (chosen by OPENBLAS_CORETYPE=Haswell)")
    chosen = _blas_in_a_process(OPENBLAS_NUM_THREADS="2")
    assert "OPENBLAS_CORETYPE" not in chosen and chosen.endswith("kernel, 2 threads")
    ignored = _blas_in_a_process(OPENBLAS_CORETYPE="NoSuchCore", OPENBLAS_NUM_THREADS="1")
    assert ignored.endswith("1 thread (OPENBLAS_CORETYPE=NoSuchCore not taken)")
