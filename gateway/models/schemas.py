"""Model catalogue wire types."""

from __future__ import annotations

from typing import Literal

import msgspec
from msgspec import UNSET, UnsetType

__all__ = ["Model", "ModelList", "Pricing"]


class Pricing(msgspec.Struct, kw_only=True, gc=False):
    """Prices as exact decimal strings: credits per 1M tokens (per image / per video second)."""

    prompt: str
    completion: str
    image: str | UnsetType = UNSET
    video_second: str | UnsetType = UNSET


class Model(msgspec.Struct, kw_only=True, gc=False):
    """A catalogue entry."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    #: Subset of chat, tools, json, images, video.
    capabilities: list[str]
    context_length: int
    pricing: Pricing
    #: Request parameters the model accepts; others are dropped.
    supported_parameters: list[str]
    description: str


class ModelList(msgspec.Struct, kw_only=True, gc=False):
    """The catalogue visible to the key."""

    object: Literal["list"] = "list"
    data: list[Model]
