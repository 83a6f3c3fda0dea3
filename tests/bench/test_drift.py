"""bench precision (drift): bf16 against fp32 over 10,000 free-running steps, no drift."""

from __future__ import annotations

import pytest

import rnnstream
from rnnstream.bench import drift
from rnnstream.cli import main


def test_bf16_does_not_drift_from_fp32_over_10000_steps() -> None:
    """The seed model's bf16 outputs stay within 1e-3 of fp32's, and the gap over the last 1,000 steps
    is no larger than twice the first 1,000's: rounding noise, not a growing error."""
    row = drift.measure("seed", rnnstream.load(rnnstream.demo.SEED_MODEL))
    assert len(row.windows) == 10 and row.largest == max(row.windows)
    assert 0 < row.largest < 1e-3
    assert row.trend < 2
    assert "seed" in drift.report([row]).splitlines()[1]


def test_the_command_reports_each_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "precision", "seed", "co2", "--steps", "100"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["model", "max"] and [line.split()[0] for line in lines[1:]] == ["seed", "co2"]
