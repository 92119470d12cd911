"""Swagger UI served by the gateway itself, so ``/docs`` works without internet access (no CDN).

The assets come from the ``swagger-ui-bundle`` package (Swagger UI, Apache License 2.0); its
licence text is served next to them at ``/docs-assets/LICENSE``.
"""

from __future__ import annotations

from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Final

from litestar import get
from litestar.exceptions import NotFoundException
from litestar.params import FromPath
from litestar.response import Response

__all__ = ["ASSETS_PATH", "CSS_URL", "FAVICON", "JS_URL", "PRESET_URL", "docs_asset"]

ASSETS_PATH: Final = "/docs-assets"
JS_URL: Final = f"{ASSETS_PATH}/swagger-ui-bundle.js"
CSS_URL: Final = f"{ASSETS_PATH}/swagger-ui.css"
PRESET_URL: Final = f"{ASSETS_PATH}/swagger-ui-standalone-preset.js"
FAVICON: Final = f"<link rel='icon' type='image/png' href='{ASSETS_PATH}/favicon-32x32.png'>"

#: Served file -> media type (nothing else of the package is reachable).
_FILES: Final = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui-standalone-preset.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "favicon-32x32.png": "image/png",
    "LICENSE": "text/plain",
}
_DISTRIBUTION: Final = "swagger-ui-bundle"


@cache
def _asset(name: str) -> bytes:
    if name == "LICENSE":
        text = metadata.distribution(_DISTRIBUTION).read_text("LICENSE") or ""
        header = f"Swagger UI, as packaged by the Python distribution {_DISTRIBUTION!r}:\n\n"
        return (header + text).encode()
    import swagger_ui_bundle

    return (Path(swagger_ui_bundle.swagger_ui_path) / name).read_bytes()


@get(f"{ASSETS_PATH}/{{name:str}}", include_in_schema=False, sync_to_thread=False)
def docs_asset(name: FromPath[str]) -> Response[bytes]:
    """One Swagger UI asset (cached for a day: the package version pins the content)."""
    media_type = _FILES.get(name)
    if media_type is None:
        raise NotFoundException()
    return Response(_asset(name), media_type=media_type, headers={"cache-control": "public, max-age=86400"})
