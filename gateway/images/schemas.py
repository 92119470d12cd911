"""Image generation wire types."""

from __future__ import annotations

import msgspec
from msgspec import UNSET, UnsetType

from gateway.schemas import Int32, Int64, Usage

__all__ = ["ImageData", "ImageGenerationRequest", "ImagesResponse"]


class ImageGenerationRequest(msgspec.Struct, kw_only=True):
    """The body of POST /v1/images/generations."""

    model: str
    prompt: str
    n: Int32 | None = None
    #: "WIDTHxHEIGHT", e.g. "1024x1024".
    size: str | None = None
    #: "b64_json" (default) or "url".
    response_format: str | None = None
    quality: str | None = None
    style: str | None = None
    user: str | None = None
    seed: Int64 | None = None


class ImageData(msgspec.Struct, kw_only=True, gc=False):
    """One image: base64 PNG or an absolute URL under /v1/files."""

    b64_json: str | UnsetType = UNSET
    url: str | UnsetType = UNSET
    revised_prompt: str | UnsetType = UNSET


class ImagesResponse(msgspec.Struct, kw_only=True, gc=False):
    """The generated images."""

    created: int
    data: list[ImageData]
    #: The generation id (the key to GET /v1/generation?id=).
    id: str
    usage: Usage | UnsetType = UNSET
