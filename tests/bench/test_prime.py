"""The history-priming benchmark: a real server, single-step requests against one history request."""

from __future__ import annotations

import pytest

from rnnstream.bench.prime import report, run
from rnnstream.cli import main


def test_the_benchmark_times_both_ways_against_a_real_server() -> None:
    result = run(steps=40, rounds=1)
    assert result.steps == 40 and result.single > 0 and result.last > 0 and result.every > 0
    assert result.difference < 1e-5  # both ways end with the same output
    lines = report(result).splitlines()
    assert lines[0].startswith("priming a 40-step history") and "× faster" in lines[2]


def test_the_command_runs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "prime", "--steps", "5", "--rounds", "1"]) == 0
    assert "5 single-step requests" in capsys.readouterr().out
