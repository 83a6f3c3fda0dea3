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


def test_generate_prints_the_prompt_then_reproducible_text(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "--steps", "60", "--seed", "3"]) == 0
    first = capsys.readouterr().out
    assert main(["generate", "--steps", "60", "--seed", "3"]) == 0
    assert capsys.readouterr().out == first
    assert first.startswith("ROMEO.\n") and len(first) == len("ROMEO.\n") + 60 + 1


def test_generate_is_the_library_call(capsys: pytest.CaptureFixture[str]) -> None:
    import rnnstream

    vocab = rnnstream.demo.text_vocabulary()
    model = rnnstream.load(rnnstream.demo.TEXT_MODEL)
    ids = rnnstream.generate(model, vocab.encode("KING.\n"), max_tokens=40, temperature=0.5, top_k=10, seed=1)
    assert main(["generate", "--prompt", "KING.\\n", "--steps", "40", "--temperature", "0.5", "--top-k", "10",
                 "--seed", "1"]) == 0
    assert capsys.readouterr().out == "KING.\n" + vocab.decode(ids) + "\n"


def test_generate_with_a_model_file_and_no_vocabulary_prints_ids(capsys: pytest.CaptureFixture[str]) -> None:
    import rnnstream

    model = rnnstream.load(rnnstream.demo.TEXT_MODEL)
    greedy = list(rnnstream.generate(model, [30, 31], max_tokens=5, temperature=0))
    assert main(["generate", str(rnnstream.demo.TEXT_MODEL), "--prompt", "30 31", "--steps", "5",
                 "--temperature", "0"]) == 0
    assert capsys.readouterr().out.split() == ["30", "31", *map(str, greedy)]


def test_generate_refuses_characters_outside_the_vocabulary(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "--prompt", "naïve"]) == 2
    assert "not in this model's vocabulary" in capsys.readouterr().err


def test_forecast_prints_a_table_of_the_bundled_series(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["forecast", "--horizon", "8"]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.strip()[:4].isdigit()]
    assert [r[0] for r in rows] == [f"2002-01-{d:02d}" for d in (5, 12, 19, 26)] + [
        f"2002-02-{d:02d}" for d in (2, 9, 16, 23)]
    assert all(360 < float(r[1]) < 385 for r in rows)


def test_forecast_from_a_past_date_with_a_cone_and_a_chart(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    png = tmp_path / "co2.png"
    assert main(["forecast", "--start", "1998-01-01", "--horizon", "52", "--noise", "residual", "--paths", "50",
                 "--seed", "0", "--png", str(png)]) == 0
    out = capsys.readouterr().out
    assert "p5" in out and "p95" in out and "measured" in out and "rmse" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_forecast_with_a_model_that_cannot_feed_itself_back(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    import rnnstream

    history = tmp_path / "history.csv"
    history.write_text("a,b,c,d\n" + "\n".join("0.1,0.2,0.3,0.4" for _ in range(5)) + "\n")
    assert main(["forecast", str(rnnstream.demo.SEED_MODEL), "--history", str(history)]) == 2
    assert "feedback" in capsys.readouterr().err


def test_bench_generate(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "generate", "--streams", "1", "3", "--tokens", "4"]) == 0
    out = capsys.readouterr().out
    assert "tokens/s" in out and "Generation(StreamModel)" in out and "Generation(Streams memory://)" in out
