"""A real browser for the UI tests: Debian's chromium driven by Playwright.

Playwright's own browser download is never used (`playwright install` needs the network); the
tests drive the system's `/usr/bin/chromium` (`apt-get install -y chromium`). Import the fixtures
into a test module with `from ..support.browser import browser_fixture, page_fixture  # noqa: F401`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Route, expect, sync_playwright

from ..conftest import missing

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",  # tests run as root in containers, where chromium's sandbox cannot start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LOOPBACK = ("http://127.0.0.1", "http://localhost", "ws://127.0.0.1", "ws://localhost")
UI_WAIT_MS = 20_000  # the UI fetches a run's form schema before its Resume dialog shows: on busy CI cores, over 5 s

# Assertions wait as long as actions do (Playwright's `expect` defaults to 5 s, its actions to 30 s).
expect.set_options(timeout=UI_WAIT_MS)


@pytest.fixture(scope="module", name="browser")
def browser_fixture() -> Iterator[Browser]:
    """One headless chromium per test module. Playwright starts it on a fresh temporary profile
    (its own user-data-dir) and deletes that profile when the browser closes."""
    if not CHROMIUM.exists():
        missing("chromium at /usr/bin/chromium", "apt-get install -y chromium")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(name="page")
def page_fixture(browser: Browser) -> Iterator[Page]:
    """A fresh browser context (no cookies, no storage) that reaches only this machine: the
    Prefect UI calls an analytics service, which a test must neither need nor feed."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(UI_WAIT_MS)
    context.route("**/*", _loopback_only)
    try:
        yield context.new_page()
    finally:
        context.close()


def _loopback_only(route: Route) -> None:
    if route.request.url.startswith(LOOPBACK):
        route.continue_()
    else:
        route.abort()
