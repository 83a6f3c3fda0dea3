"""The limits: one table in the code, the same in docs/operations.md, the CLI's flags and the config."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import fields

import pytest

from rnnstream.errors import InputError
from rnnstream.server.config import ServerConfig
from rnnstream.server.limits import LIMITS, check, markdown_table
from rnnstream.server.refusals import LimitError, error_body, status_for
from tests.server.conftest import ROOT


def test_the_operations_page_table_is_the_limits_table() -> None:
    page = (ROOT / "docs" / "operations.md").read_text()
    found = re.search(r"<!-- limits-table:.*?-->\n(.*?)\n<!-- end of limits-table -->", page, flags=re.DOTALL)
    assert found is not None and found.group(1) == markdown_table()


def test_every_limit_is_a_config_field_with_its_default_and_a_flag() -> None:
    config, names = ServerConfig(), {f.name for f in fields(ServerConfig)}
    for limit in LIMITS:
        assert limit.name in names and getattr(config, limit.name) == limit.default
    help_text = subprocess.run([sys.executable, "-m", "rnnstream", "serve", "--help"], capture_output=True,
                               text=True, check=True).stdout
    for limit in LIMITS:
        assert limit.flag in help_text
    restored = ServerConfig.from_json(ServerConfig(max_prompt_tokens=7).to_json())
    assert restored.max_prompt_tokens == 7


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "8"])
def test_a_limit_must_be_a_positive_integer(value: object) -> None:
    with pytest.raises(InputError, match="--max-quantiles"):
        ServerConfig(max_quantiles=value)  # type: ignore[arg-type]


def test_a_request_past_a_limit_names_it_and_its_value() -> None:
    check("max_quantiles", 99, 99)
    with pytest.raises(LimitError) as refused:
        check("max_quantiles", 100, 99)
    assert status_for(refused.value) == 400 and "--max-quantiles" in str(refused.value)
    assert error_body(refused.value)["limit"] == {"name": "max_quantiles", "value": 100, "limit": 99}
