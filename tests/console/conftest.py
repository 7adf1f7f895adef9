"""The console's browser fixtures: Debian's chromium through Playwright, offline."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture
def browser() -> Iterator[Any]:
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield browser
        browser.close()


def offline_page(browser: Any, proxy: Any, outside: list[str]) -> tuple[Any, Any]:
    """A page that can reach the proxy and nothing else (as on an offline network)."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})

    def route(route: Any) -> None:
        if route.request.url.startswith(proxy.url):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    context.route("**/*", route)
    return context, context.new_page()


def log_in(page: Any, proxy: Any, token: str) -> None:
    page.goto(proxy.url + "/console/login")
    page.fill("input[type=password]", token)
    page.click("button[type=submit]")
    page.wait_for_url(proxy.url + "/console/tasks")
