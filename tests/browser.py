"""A real browser for tests: Debian's Chromium, headless, driven by Playwright (`playwright install` cannot download
browsers here). Screenshots go to tests/artifacts/<area>/ (not committed)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright import sync_api as playwright_api

from tests.requirements import CHROMIUM, need

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


@contextmanager
def chromium(area: str, *flags: str) -> Iterator[tuple[playwright_api.Browser, Path]]:
    """A running headless Chromium (with `flags` added), and the folder for `area`'s screenshots (created)."""
    need("chromium")
    artifacts = ARTIFACTS / area
    artifacts.mkdir(parents=True, exist_ok=True)
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=[*CHROMIUM_FLAGS, *flags])
        try:
            yield browser, artifacts
        finally:
            browser.close()
