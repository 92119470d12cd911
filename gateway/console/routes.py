"""GET /console (the single page) and GET /console/assets/{name} (its script, style and icon)."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Final

from litestar import get
from litestar.exceptions import NotFoundException
from litestar.params import FromPath
from litestar.response import Response

__all__ = ["CONSOLE_ROUTES", "CSP"]

_STATIC: Final = Path(__file__).with_name("static")

#: Same-origin scripts, styles, images and API calls only; no inline script or style, no framing,
#: no forms posting elsewhere, no plugins.
CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'"
)
_SECURITY_HEADERS: Final = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
}
#: Served file -> media type (nothing else under static/ is reachable).
_ASSETS: Final = {
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}


@cache
def _read(name: str) -> bytes:
    return (_STATIC / name).read_bytes()


@get("/console", include_in_schema=False, sync_to_thread=False)
def console_page() -> Response[bytes]:
    """The console's single HTML page (every view is drawn by console.js)."""
    return Response(
        _read("index.html"),
        media_type="text/html; charset=utf-8",
        headers={**_SECURITY_HEADERS, "cache-control": "no-store"},
    )


@get("/console/assets/{name:str}", include_in_schema=False, sync_to_thread=False)
def console_asset(name: FromPath[str]) -> Response[bytes]:
    """One static asset (revalidated on every load: a deploy changes them without renaming)."""
    media_type = _ASSETS.get(name)
    if media_type is None:
        raise NotFoundException()
    return Response(_read(name), media_type=media_type, headers={**_SECURITY_HEADERS, "cache-control": "no-cache"})


CONSOLE_ROUTES: Final = [console_page, console_asset]
