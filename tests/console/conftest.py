"""The console journeys (SPEC §12) in real headless Chromium: Debian's /usr/bin/chromium driven by
Playwright (`executable_path`, never `playwright install`), against a real `raven serve` process.

Screenshots of every page go to ``build/screenshots/`` (test output) or to ``RAVEN_SCREENSHOT_DIR``
(`make screenshots` refreshes the committed ``docs/screenshots/`` with it).
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import httpx
import pytest
from raven_procs import ROOT, start_raven

CHROMIUM = os.environ.get("RAVEN_CHROMIUM", "/usr/bin/chromium")
#: As the machine's notes say: without the background-networking flags Chromium tries to reach
#: Google's hosts at every start; this machine has no network but the registries.
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
SHOTS = Path(os.environ.get("RAVEN_SCREENSHOT_DIR") or ROOT / "build" / "screenshots")


@pytest.fixture(scope="session")
def chromium_path() -> str:
    if not os.access(CHROMIUM, os.X_OK):  # the project's own set-up installs it (Debian package)
        subprocess.run(["bash", str(ROOT / "scripts" / "ensure_chromium.sh")], check=True, timeout=600)
    assert os.access(CHROMIUM, os.X_OK), f"{CHROMIUM} is missing and could not be installed"
    return CHROMIUM


@pytest.fixture(scope="module")
def raven(tmp_path_factory):
    proc = start_raven(tmp_path_factory.mktemp("console") / "data")
    yield proc
    assert proc.stop() == 0


@pytest.fixture(scope="module")
def browser(chromium_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        yield b
        b.close()


class Watch:
    """Everything the page asked for and complained about."""

    def __init__(self, page, base: str) -> None:
        self.requests: list[str] = []
        self.problems: list[str] = []
        self.base = base
        page.on("request", lambda r: self.requests.append(r.url))
        page.on("pageerror", lambda e: self.problems.append(f"pageerror: {e}"))
        page.on(
            "console",
            lambda m: (
                self.problems.append(f"console {m.type}: {m.text}")
                if m.type == "error" or "Content Security Policy" in m.text
                else None
            ),
        )

    def api_calls(self) -> list[str]:
        return [u for u in self.requests if "/v1/" in u]

    def check(self, **expected: int) -> None:
        """No script error, no CSP violation, no failed load but the ``expected`` ones (``e401=1``),
        nothing requested from another origin, no key in any URL."""
        failed = re.compile(r"Failed to load resource: the server responded with a status of (\d+)")
        seen: dict[str, int] = {}
        for p in self.problems:
            m = failed.search(p)
            assert m, p
            seen[f"e{m.group(1)}"] = seen.get(f"e{m.group(1)}", 0) + 1
        assert seen == expected
        assert [u for u in self.requests if not u.startswith(self.base) and not u.startswith(("blob:", "data:"))] == []
        assert not [u for u in self.requests if "rk-" in u]  # the key never travels in a URL


@pytest.fixture
def page(browser, raven):
    context = browser.new_context(viewport={"width": 1280, "height": 800}, accept_downloads=True)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=raven.base)
    pg = context.new_page()
    pg.set_default_timeout(15000)
    pg.watch = Watch(pg, raven.base)
    yield pg
    context.close()


def shot(page, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"console-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def rest(raven, key: str) -> httpx.Client:
    return httpx.Client(base_url=raven.base, headers={"authorization": f"Bearer {key}"}, timeout=30)
