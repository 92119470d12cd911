"""The web console at ``/console`` (SPEC §12): static files served by the gateway itself.

A client of the public REST API like any other: the browser keeps the key in ``sessionStorage`` and
sends it only as ``Authorization: Bearer`` to ``/v1/...``; no route here reads a key, a cookie or a
query string, and nothing is fetched from elsewhere (no CDN, no web fonts, charts are SVG drawn by
``console.js``). The Content-Security-Policy allows scripts, styles and connections to this origin
only, with no inline script or style.
"""

from gateway.console.routes import CONSOLE_ROUTES, CSP

__all__ = ["CONSOLE_ROUTES", "CSP"]
