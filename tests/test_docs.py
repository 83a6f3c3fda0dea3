"""The Python examples of README.md and docs/*.md run as written, and each prints what it shows.

Every fenced ``python`` (or ``py``) block runs in a fresh namespace. A block that cannot run here opts
out with ``<!-- no-run: the reason -->`` on the line before its fence; only a running server or Redis
is a reason, and opt-outs stay rare.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\S*)[^\n]*\n(.*?)^```[ \t]*$", flags=re.DOTALL | re.MULTILINE)
NO_RUN = re.compile(r"<!-- no-run(?::\s*(.*?))?\s*-->\s*\Z", flags=re.DOTALL)
MAX_OPT_OUTS = 4


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # of the first line of code
    code: str
    no_run: str | None  # the reason given, "" when none; None when the block runs

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def python_blocks(page: Path) -> list[Block]:
    text = page.read_text()
    blocks = []
    for fence in FENCE.finditer(text):
        if fence[1] not in ("python", "py"):
            continue
        before = text[max(0, fence.start() - 300) : fence.start()]
        opt_out = NO_RUN.search(before)
        line = text.count("\n", 0, fence.start(2)) + 1
        blocks.append(Block(page, line, fence[2], None if opt_out is None else (opt_out[1] or "")))
    return blocks


BLOCKS = [block for page in PAGES for block in python_blocks(page)]
RUN = [block for block in BLOCKS if block.no_run is None]


def test_the_pages_have_examples() -> None:
    pages = {block.page.name for block in RUN}
    assert len(RUN) >= 15 and {"README.md", "index.md", "models.md", "streams.md", "generation.md"} <= pages


def test_opt_outs_are_rare_and_give_a_reason() -> None:
    skipped = [block for block in BLOCKS if block.no_run is not None]
    assert len(skipped) <= MAX_OPT_OUTS, [block.id for block in skipped]
    for block in skipped:
        assert block.no_run, f"{block.id}: a <!-- no-run --> needs a reason: <!-- no-run: why -->"


def test_the_block_finder_reads_fences_and_opt_outs(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# t\n\n```python\nprint(1)\n```\n\n<!-- no-run: needs a server -->\n```py\nx\n```\n"
                    "\n```sh\nls\n```\n")
    first, second = python_blocks(page)
    assert (first.line, first.code, first.no_run) == (4, "print(1)\n", None)
    assert (second.code, second.no_run) == ("x\n", "needs a server")


@pytest.mark.parametrize("block", RUN, ids=[block.id for block in RUN])
def test_example_runs(block: Block, capsys: pytest.CaptureFixture[str]) -> None:
    code = "\n" * (block.line - 1) + block.code  # a traceback names the page's own line
    exec(compile(code, str(block.page), "exec"), {"__name__": "__docs_example__"})
    assert capsys.readouterr().out, f"{block.id} prints nothing: every example prints what it shows"
