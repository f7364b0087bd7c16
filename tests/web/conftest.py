"""Browser fixtures: a live Levant on its own home (real SmolLM2), and Debian's Chromium.

Chromium is the system one (``/usr/bin/chromium``); ``playwright install`` is never run.
Locally the browser tests skip when either is missing; under CI they fail instead.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from levant.config import Settings
from tests.conftest import DEFAULT_MODEL, REPO, LiveServer, isolated_home
from tests.web.fixtures import admin_credentials

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
SCREENSHOTS = REPO / "test-output" / "screenshots"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


def _need_browser() -> None:
    missing = []
    try:
        import playwright  # noqa: F401
    except ImportError:
        missing.append("the playwright package")
    if not (Path(CHROMIUM).exists() or shutil.which("chromium")):
        missing.append(CHROMIUM)
    if missing:
        reason = "browser tests need " + " and ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture(scope="session")
def web_server(model_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    home, catalog = isolated_home(tmp_path_factory.mktemp("web-home"), model_home)
    server = LiveServer(Settings(home=home, catalog_path=catalog), preload=[DEFAULT_MODEL])
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def credentials(web_server: LiveServer) -> dict[str, str]:
    return admin_credentials(web_server.state.settings.home)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    _need_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


def screenshot(page: Any, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path
