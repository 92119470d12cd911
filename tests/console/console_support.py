"""Helpers of the console journeys (tests/console): the browser's settings, screenshots, REST."""

from __future__ import annotations

import os
import re
from pathlib import Path

import httpx
from raven_procs import ROOT

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


def shot(page, name: str, *, secrets: bool = False) -> Path:
    """A full-page screenshot; with `secrets`, shown-once secrets are masked (they go in a repo)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"console-{name}.png"
    page.screenshot(path=str(path), full_page=True, mask=[page.locator("[data-secret]")] if secrets else [])
    return path


def rest(raven, key: str) -> httpx.Client:
    return httpx.Client(base_url=raven.base, headers={"authorization": f"Bearer {key}"}, timeout=30)
