"""bench seed: the blog's approaches in real Keras and rnnstream agree, and the PNG is written."""

from __future__ import annotations

from pathlib import Path

import pytest

from rnnstream.bench import seed
from rnnstream.cli import main

pytest.importorskip("keras")


def test_every_exact_approach_agrees(tmp_path: Path) -> None:
    text, agreed = seed.run(length=4, window=2, png=tmp_path / "seed.png")
    assert agreed, text
    for approach in ("classic", "windowed", "stateful", "functional", "subclassed", "model(x)", "tf.function",
                     "rnnstream"):  # fmt: skip
        assert approach in text
    assert "approximate by design" in text
    assert (tmp_path / "seed.png").read_bytes()[:4] == b"\x89PNG"


def test_disagreement_is_reported() -> None:
    import numpy as np

    ok = seed.Result("classic", 1.0, np.zeros((2, 3)))
    off = seed.Result("other", 1.0, np.full((2, 3), 1e-3))
    assert seed.check_agreement([ok, off]) == ["other"]
    assert seed.check_agreement([ok, seed.Result("windowed", 1.0, np.ones((2, 3)), exact=False)]) == []


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "seed", "--length", "2", "--png", str(tmp_path / "s.png")]) == 0
    assert "agree" in capsys.readouterr().out
