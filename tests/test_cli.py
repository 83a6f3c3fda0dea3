"""The command line, run as a user runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from rnnstream.cli import main


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rnnstream", *args], capture_output=True, text=True, timeout=300)


def test_demo_shows_flat_steps_and_equal_outputs() -> None:
    result = run_cli("demo")
    assert result.returncode == 0, result.stderr
    assert "recompute context" in result.stdout and "3,000" in result.stdout
    differences = [line.split()[-1] for line in result.stdout.splitlines() if line.strip()[:1].isdigit()]
    assert differences and all(float(d) == 0.0 for d in differences)


def test_summary(capsys: pytest.CaptureFixture[str]) -> None:
    import rnnstream

    assert main(["summary", str(rnnstream.demo.SEED_MODEL)]) == 0
    assert "lstm2" in capsys.readouterr().out


def test_bench_context(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "context", "--lengths", "2", "5", "--repeats", "10", "--batch", "3"]) == 0
    out = capsys.readouterr().out
    assert "slowest / fastest" in out and "batch 3" in out


def test_bad_model_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "x.keras"
    path.write_text("nope")
    assert main(["summary", str(path)]) == 2
    assert "not a Keras model file" in capsys.readouterr().err


def test_serve_refuses_workers_without_a_shared_store(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--workers", "2"]) == 2
    assert "needs a shared store" in capsys.readouterr().err
