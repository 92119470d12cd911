"""Absolute URLs for the file paths the service returns ("/v1/files/file-.../content")."""

from __future__ import annotations

from typing import Any

from litestar import Request

from gateway.backend import settings_of

__all__ = ["absolute_url", "public_base_url"]


def public_base_url(request: Request[Any, Any, Any]) -> str:
    """``settings.public_base_url``, else the request's own ``scheme://host:port`` (no trailing /)."""
    settings = settings_of(request)
    if settings.public_base_url:
        return settings.public_base_url.rstrip("/")
    return str(request.base_url).rstrip("/")


def absolute_url(path: str, base: str) -> str:
    """``path`` made absolute under ``base``; already absolute URLs and "" pass through."""
    if not path or path.startswith(("http://", "https://", "data:")):
        return path
    return f"{base}{path}" if path.startswith("/") else f"{base}/{path}"
