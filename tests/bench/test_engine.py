"""bench engine: every engine's outputs agree with rnnstream, and the report, JSON and chart are written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rnnstream.bench import engine

pytest.importorskip("onnxruntime")


def test_engines_agree_and_are_reported(tmp_path: Path) -> None:
    rows, missing = engine.measure("seed", (1, 3), ("rnnstream", "onnxruntime", "pytorch"), 1, 2, "auto")
    assert [r.batch for r in rows] == [1, 3]
    names = set(rows[0].seconds)
    assert {"rnnstream-fused", "onnxruntime"} <= names or {"rnnstream-numpy", "onnxruntime"} <= names
    assert ("pytorch" in names) != any(m.startswith("pytorch") for m in missing)
    for row in rows:
        assert all(seconds > 0 for seconds in row.seconds.values())
        assert max(row.max_difference.values()) <= 1e-5
    text = engine.report(rows)
    assert "onnxruntime" in text and "×" in text
    engine.save_json(rows, tmp_path / "e.json", {"threads": 1})
    assert json.loads((tmp_path / "e.json").read_text())["rows"][0]["batch"] == 1
    pytest.importorskip("matplotlib")
    engine.save_chart(rows, tmp_path / "e.png")
    assert (tmp_path / "e.png").read_bytes()[:4] == b"\x89PNG"


def test_an_engine_that_cannot_start_is_reported_not_fatal() -> None:
    rows, missing = engine.measure("seed", (1,), ("rnnstream", "no-such-engine"), 1, 1, "auto")
    assert list(rows[0].seconds) == [next(iter(rows[0].seconds))]
    assert missing and missing[0].startswith("no-such-engine")


def test_the_device_batch_row_agrees() -> None:
    """``device`` adds rnnstream's DeviceBatch on that torch device as one more engine."""
    pytest.importorskip("torch")
    rows, missing = engine.measure("seed", (1, 3), ("rnnstream", engine.DEVICE_ENGINE), 1, 1, "numpy",
                                   device="cpu")  # fmt: skip
    assert not missing and list(rows[0].seconds) == ["rnnstream-numpy", "rnnstream-device-cpu"]
    assert all(max(row.max_difference.values()) <= 1e-5 for row in rows)
