"""The catalogue entries of the built-in `local` provider (used when no config is given)."""

from __future__ import annotations

from decimal import Decimal

from raven_service.core.types import OPTIONAL_PARAMS, ModelInfo, Route
from raven_service.providers.local._embed import DEFAULT_DIMENSIONS

__all__ = ["CHAT_MODEL", "EMBED_MODEL", "IMAGE_MODEL", "VIDEO_MODEL", "local_models"]

CHAT_MODEL = "local-chat"
IMAGE_MODEL = "local-image"
VIDEO_MODEL = "local-video"
EMBED_MODEL = "local-embed"
_CREATED = 1_735_689_600  # 2025-01-01T00:00:00Z: fixed, so the catalogue is stable


def local_models(provider: str = "local") -> list[ModelInfo]:
    """The local chat, image, video and embedding models, each routed to `provider`."""
    return [
        ModelInfo(
            id="raven/local-chat",
            routes=(Route(provider=provider, model=CHAT_MODEL),),
            capabilities=("chat", "tools", "json"),
            context_length=32768,
            price_input_per_mtok=Decimal("0.10"),
            price_output_per_mtok=Decimal("0.40"),
            supported_parameters=OPTIONAL_PARAMS,
            description="Built-in deterministic chat simulator: streams plausible text, calls tools "
            "with schema-valid arguments, honours response_format, max_tokens, stop and seed.",
            created=_CREATED,
        ),
        ModelInfo(
            id="raven/local-image",
            routes=(Route(provider=provider, model=IMAGE_MODEL),),
            capabilities=("images",),
            price_per_image=Decimal("0.002"),
            supported_parameters=("n", "size", "response_format", "seed", "quality", "style"),
            description="Built-in image simulator: renders real PNGs of the requested size.",
            created=_CREATED,
        ),
        ModelInfo(
            id="raven/local-video",
            routes=(Route(provider=provider, model=VIDEO_MODEL),),
            capabilities=("video",),
            price_per_video_second=Decimal("0.01"),
            supported_parameters=("seconds", "size", "seed", "image"),
            description="Built-in video simulator: encodes real H.264 MP4 clips, optionally from a "
            "first-frame image.",
            created=_CREATED,
        ),
        ModelInfo(
            id="raven/local-embed",
            routes=(Route(provider=provider, model=EMBED_MODEL),),
            capabilities=("embeddings",),
            context_length=8192,
            price_input_per_mtok=Decimal("0.02"),
            embedding_dimensions=DEFAULT_DIMENSIONS,
            supported_parameters=("dimensions", "encoding_format", "user"),
            description="Built-in embeddings simulator: deterministic unit vectors from hashed word "
            "features (texts sharing words are close); honours dimensions.",
            created=_CREATED,
        ),
    ]
