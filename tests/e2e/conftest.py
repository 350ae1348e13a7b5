"""Browser fixtures for the console's end-to-end tests: Debian's Chromium,
headless, driven by Playwright for Python (Playwright's own browser download is
unreachable on these machines, so it launches /usr/bin/chromium).

Without Chromium or Playwright the tests skip, or fail under
``AGENTAPI_REQUIRE_ALL=1`` (CI installs Chromium first: .ci/run).
Screenshots of every page go to ``var/artifacts/console/`` (AGENTAPI_ARTIFACTS_DIR).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import unavailable
from tests.stack import MASTER_KEY, Stack

CHROMIUM = os.environ.get("AGENTAPI_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("AGENTAPI_ARTIFACTS_DIR", Path(__file__).parents[2] / "var" / "artifacts" / "console"))


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Any]:
    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        unavailable(f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.async_api import async_playwright
    except ImportError as exc:
        unavailable(f"Playwright for Python is not installed: {exc}")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as playwright:
        # --no-sandbox: CI runs as root in a container, where Chromium's sandbox cannot start.
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        await launched.close()


class Console:
    """One browser tab on the console, with the errors it logged."""

    def __init__(self, page: Any, base_url: str) -> None:
        self.page = page
        self.base_url = base_url
        self.errors: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        page.on("console", lambda msg: msg.type == "error" and self.errors.append(f"console: {msg.text}"))

    async def sign_in(self, key: str = MASTER_KEY) -> None:
        await self.page.goto(f"{self.base_url}/console/")
        await self.page.fill("#api-key", key)
        await self.page.keyboard.press("Enter")  # keyboard only: the form submits on Enter
        await self.page.wait_for_selector("nav[aria-label=Console]")

    async def open(self, route: str) -> None:
        await self.page.goto(f"{self.base_url}/console/#{route}")
        await self.page.wait_for_selector("#page-title")

    async def shot(self, name: str, full_page: bool = True) -> Path:
        path = ARTIFACTS / f"{name}.png"
        await self.page.screenshot(path=str(path), full_page=full_page)
        return path


@pytest.fixture
async def console(browser: Any, offline_stack: Stack) -> AsyncIterator[Console]:
    context = await browser.new_context(viewport={"width": 1280, "height": 860}, color_scheme="light")
    page = await context.new_page()
    page.set_default_timeout(15_000)
    tab = Console(page, offline_stack.bridge_url)
    yield tab
    await context.close()
    # A failed API call the test provoked is expected; a script error never is.
    assert not [e for e in tab.errors if e.startswith("page error")], tab.errors
