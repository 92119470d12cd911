"""The console journeys (SPEC §12) in real headless Chromium: Debian's /usr/bin/chromium driven by
Playwright (`executable_path`, never `playwright install`), against a real `raven serve` process.

Screenshots of every page go to ``build/screenshots/`` (test output) or to ``RAVEN_SCREENSHOT_DIR``
(`make screenshots` refreshes the committed ``docs/screenshots/`` with it).
"""

from __future__ import annotations

import os
import subprocess

import pytest
from console_support import CHROMIUM, CHROMIUM_ARGS, Watch
from raven_procs import ROOT, start_raven


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


@pytest.fixture
def page(browser, raven):
    context = browser.new_context(viewport={"width": 1280, "height": 800}, accept_downloads=True)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=raven.base)
    pg = context.new_page()
    pg.set_default_timeout(15000)
    pg.watch = Watch(pg, raven.base)
    yield pg
    context.close()
