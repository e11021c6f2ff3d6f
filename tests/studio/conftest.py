"""The studio's browser tests' parts: a live `noor serve` (toy model) per module, Debian's Chromium driven by
Playwright, a page that fails its test on any JavaScript error, signing in, screenshots at two widths."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Served, start_serve

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "studio"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def serve_on(toy_weights: Path) -> Iterator[Callable[[Path], Served]]:
    """Starts a live `noor serve` (toy model) on a data dir the test module filled first (its models, concepts);
    every server started is stopped after the module."""
    started: list[Served] = []

    def start(data: Path) -> Served:
        server = start_serve(data, toy_weights)
        started.append(server)
        assert server.key, "noor serve printed no admin key"
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, serve_on: Callable[[Path], Served]) -> Served:
    """The studio on an empty data dir: noor-tiny only."""
    return serve_on(tmp_path_factory.mktemp("studio-data"))


def tenant_key(served: Served, name: str, *flags: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "noor.cli", "keys", "create", "--tenant", name, *flags],
        env=served.env,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium)"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=["--headless", "--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


def open_page(browser: Any, served: Served, **options: Any) -> Iterator[Any]:
    """A page of its own browser context on the served studio (`options`: the context's viewport, touch…); after
    the test, a JavaScript error the page raised fails it."""
    context = browser.new_context(base_url=served.base, **options)
    context.set_default_timeout(15_000)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda err: errors.append(str(err)))
    yield pg
    context.close()
    assert not errors, f"JavaScript errors in the page: {errors}"


@pytest.fixture
def page(browser: Any, served: Served) -> Iterator[Any]:
    yield from open_page(browser, served, viewport=DESKTOP)


def sign_in(pg: Any, key: str) -> None:
    pg.goto("/")
    pg.get_by_label("API key").fill(key)
    pg.get_by_role("button", name="Sign in").click()
    pg.wait_for_selector("main[data-view=create] textarea[name=prompt]")


def shoot(pg: Any, name: str) -> None:
    """The page as it is now, at desktop and at phone width."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for label, size in (("desktop", DESKTOP), ("phone", PHONE)):
        pg.set_viewport_size(size)
        overflow = pg.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 1, f"{name} at {label} width scrolls sideways by {overflow}px"
        pg.screenshot(path=str(ARTIFACTS / f"{name}-{label}.png"), full_page=True)
    pg.set_viewport_size(DESKTOP)
