"""The docs' coverage table is the importers' own tables (rnnstream.importers.coverage)."""

from __future__ import annotations

import re
from pathlib import Path

from rnnstream.importers import keras_refusals, onnx_model, torch_layers
from rnnstream.importers.coverage import coverage, markdown_table

PAGE = Path(__file__).resolve().parents[2] / "docs" / "models.md"


def test_the_models_page_table_is_the_importers_tables() -> None:
    found = re.search(r"<!-- coverage-table:.*?-->\n(.*?)\n<!-- end of coverage-table -->", PAGE.read_text(),
                      flags=re.DOTALL)
    assert found is not None and found[1] == markdown_table()


def test_every_refusal_gives_a_reason_and_nothing_is_both_read_and_refused() -> None:
    for table in (keras_refusals.REFUSED, onnx_model.REFUSED, torch_layers.REFUSED):
        assert all(isinstance(reason, str) and len(reason) > 10 for reason in table.values())
    rows = {(framework, what): set(names) for framework, what, names in coverage()}
    assert not rows["Keras", "layers"] & rows["Keras", "refused with the reason"]
    assert not rows["ONNX", "operators"] & rows["ONNX", "refused with the reason"]
    assert not rows["PyTorch", "modules"] & rows["PyTorch", "refused with the reason"]
