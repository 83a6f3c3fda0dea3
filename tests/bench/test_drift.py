"""bench precision (drift): bf16 and int8 against fp32 over 10,000 free-running steps, no drift."""

from __future__ import annotations

import pytest

import rnnstream
from rnnstream.backends import fused
from rnnstream.bench import drift
from rnnstream.cli import main


@pytest.mark.parametrize("precision", ["bf16-widen", "bf16-dot"])
def test_bf16_does_not_drift_from_fp32_over_10000_steps(precision: str) -> None:
    """The seed model's bf16 outputs (either mode; bf16-dot emulated by NumPy where the kernel cannot) stay
    within 1e-3 of fp32's, and the gap over the last 1,000 steps is no larger than twice the first
    1,000's: rounding noise, not a growing error."""
    kernel = fused.available() and (precision == "bf16-widen" or fused.bf16_dot())
    model = rnnstream.load(rnnstream.demo.SEED_MODEL, backend="fused" if kernel else "numpy")
    row = drift.measure("seed", model, precision=precision)
    assert len(row.windows) == 10 and row.largest == max(row.windows) and row.precision == precision
    assert 0 < row.largest < 1e-3
    assert row.trend < 2
    assert "seed" in drift.report([row]).splitlines()[1]


def test_the_command_reports_each_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "precision", "seed", "co2", "--steps", "100"]) == 0
    lines = capsys.readouterr().out.splitlines()
    modes = ["bf16-widen", "bf16-dot", "int8"] if fused.available() and fused.bf16_dot() else ["bf16-widen", "int8"]
    assert lines[0].split()[:3] == ["model", "precision", "max"]
    assert [line.split()[0] for line in lines[1:]] == ["seed"] * len(modes) + ["co2"] * len(modes)
    assert [line.split()[1] for line in lines[1:]] == modes * 2


def test_int8_does_not_drift_from_fp32_over_10000_steps() -> None:
    """The seed model at int8 (the kernel's int8 path, or NumPy's emulation) stays within 2e-3 of fp32's
    outputs (measured: 5.7e-4), and the last 1,000 steps' gap is no larger than twice the first 1,000's."""
    kernel = fused.available() and fused.int8()
    model = rnnstream.load(rnnstream.demo.SEED_MODEL, backend="fused" if kernel else "numpy")
    row = drift.measure("seed", model, precision="int8")
    assert row.precision == "int8" and 0 < row.largest < 2e-3
    assert row.trend < 2
