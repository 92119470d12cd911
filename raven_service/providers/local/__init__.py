"""The built-in `local` provider: a deterministic, network-free simulator of chat, image and
video upstreams, for development, tests and benchmarks (SPEC §5, §8)."""

from raven_service.providers.local._catalog import (
    CHAT_MODEL,
    EMBED_MODEL,
    IMAGE_MODEL,
    VIDEO_MODEL,
    local_models,
)
from raven_service.providers.local._provider import LocalProvider, LocalVideoStatus

__all__ = [
    "CHAT_MODEL",
    "EMBED_MODEL",
    "IMAGE_MODEL",
    "VIDEO_MODEL",
    "LocalProvider",
    "LocalVideoStatus",
    "local_models",
]
