"""The live page in real headless Chromium (Playwright driving Debian's /usr/bin/chromium).

It loads, a prompt produces text that appears piece by piece, the replayed series and its forecast cone
are drawn and keep growing, the live figures are non-zero; a screenshot goes to test-artifacts/. With a
token and only the seed model, the page asks for the token and says what is missing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.server.conftest import ROOT, ServerProcess

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]

if not CHROMIUM.exists():
    pytest.skip("the page test needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the page test needs playwright (the test extra)")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield chromium
        chromium.close()


OBSERVE = """
window.seenLengths = [];
const generated = document.getElementById("generated");
new MutationObserver(() => window.seenLengths.push([performance.now(), generated.textContent.length]))
    .observe(generated, {childList: true, characterData: true, subtree: true});
"""
"""Record, independently of the page's code, how much generated text is on screen at each change."""


def poll(page: Any, expression: str, timeout: float = 20.0) -> Any:
    """Evaluate ``expression`` in the page until it is truthy; its value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = page.evaluate(expression)
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"{expression} stayed falsy for {timeout} s")


def test_text_streams_the_chart_follows_the_series_and_figures_are_live(browser: Any,
                                                                        demo_server: ServerProcess) -> None:
    page = browser.new_page(viewport={"width": 1360, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(demo_server.url + "/")
    poll(page, "document.getElementById('server').dataset.state === 'ready'")
    assert page.locator("#text-missing").is_hidden() and page.locator("#chart-missing").is_hidden()

    page.fill("#prompt", "JULIET.\n")
    page.fill("#max-tokens", "1500")
    page.fill("#seed", "7")
    page.evaluate(OBSERVE)
    page.click("#generate")
    poll(page, "document.getElementById('finish').textContent === 'reached the token limit'")
    poll(page, "!document.getElementById('output').classList.contains('running')")
    seen = page.evaluate("window.seenLengths")  # [[ms, characters on screen], ...] at every change
    assert seen[-1][1] == 1500  # every token is one character
    partial = [(ms, n) for ms, n in seen if 0 < n < 1500]
    # Seen part-way more than once, not only empty and finished. The browser draws at most once a frame:
    # on a fast machine the 1,500 tokens take ~80 ms, so only a few partial lengths are ever drawn.
    assert len({n for _, n in partial}) >= 2, seen
    assert seen[-1][0] - partial[0][0] > 20  # over time, as the events arrived
    assert page.text_content("#prompt-echo") == "JULIET.\n"

    chart = page.locator("#chart")
    poll(page, "Number(document.getElementById('chart').dataset.forecasts) > 0")
    first = int(chart.get_attribute("data-points") or 0)
    time.sleep(1.0)
    later = int(chart.get_attribute("data-points") or 0)
    assert later > first >= 52  # one point per replayed week, a dozen more each second
    assert chart.get_attribute("data-cone") == "52"  # a year of forecast cone is drawn
    assert poll(page, "Number(document.getElementById('tile-steps').dataset.value)") > 0
    assert poll(page, "Number(document.getElementById('tile-tokens').dataset.value)") > 0
    assert poll(page, "Number(document.getElementById('tile-streams').dataset.value)") > 0
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "live_page.png"), full_page=True)
    page.click("#play")  # pause: the replay stops stepping
    paused = int(chart.get_attribute("data-points") or 0)
    time.sleep(0.5)
    assert int(chart.get_attribute("data-points") or 0) <= paused + 1
    assert errors == []
    page.close()


def test_the_page_asks_for_the_token_and_says_what_is_missing(browser: Any,
                                                              seed_token_server: ServerProcess) -> None:
    page = browser.new_page()
    page.goto(seed_token_server.url + "/")
    poll(page, "!document.getElementById('auth').hidden")
    assert page.get_attribute("#server", "data-state") == "error"
    page.fill("#token", "s3cret")
    page.click("#auth button")
    poll(page, "document.getElementById('server').dataset.state === 'ready'")
    poll(page, "!document.getElementById('chart-missing').hidden")
    assert "co2" in page.text_content("#chart-missing")
    assert "text" in page.text_content("#text-missing") and page.is_disabled("#generate")
    page.close()

    with_token = browser.new_page()
    with_token.goto(seed_token_server.url + "/?token=s3cret")
    poll(with_token, "document.getElementById('server').dataset.state === 'ready'")
    assert "token" not in with_token.url  # taken out of the address bar
    assert with_token.locator("#auth").is_hidden()
    with_token.close()
