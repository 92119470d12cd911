"""Composition root, providers part: provider kind -> adapter factory, the catalogue they serve and
each route's retry policy, built from the service's settings.

This is the one module that knows both the configuration (`raven_service.config`) and the
adapters; adapters themselves depend on `raven_service.core` and their own settings type only."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from raven_service.config import ConfigError, ProviderConfig, Settings, model_infos
from raven_service.core.ports import ChatProvider, EmbeddingProvider, ImageProvider, VideoProvider
from raven_service.core.types import ModelInfo
from raven_service.routing.router import RetryPolicy


@dataclass
class Providers:
    chat: dict[str, ChatProvider] = field(default_factory=dict)
    image: dict[str, ImageProvider] = field(default_factory=dict)
    video: dict[str, VideoProvider] = field(default_factory=dict)
    embedding: dict[str, EmbeddingProvider] = field(default_factory=dict)
    models: list[ModelInfo] = field(default_factory=list)
    retry_policies: dict[str, RetryPolicy] = field(default_factory=dict)
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)


def _local(name: str, settings: Settings, cfg: ProviderConfig | None) -> object:
    from raven_service.providers.local import LocalProvider

    tps = settings.local_tokens_per_second
    if cfg is not None and cfg.tokens_per_second is not None:
        tps = cfg.tokens_per_second
    return LocalProvider(name, tokens_per_second=tps)


def _adapter(name: str, cfg: ProviderConfig, settings: Settings) -> object:
    if cfg.kind == "local":
        return _local(name, settings, cfg)
    try:
        module = __import__(f"raven_service.providers.{_MODULES[cfg.kind]}", fromlist=["create"])
    except ModuleNotFoundError:
        raise ConfigError(f"providers.{name}: kind {cfg.kind!r} is not available in this build") from None
    return module.create(name, cfg)


_MODULES = {"openai": "openai_compat", "anthropic": "anthropic", "gemini": "gemini"}


def build_providers(settings: Settings) -> Providers:
    from raven_service.providers.local import local_models

    out = Providers()
    adapters: dict[str, object] = {}
    if "local" not in settings.providers:
        adapters["local"] = _local("local", settings, None)
    for name, cfg in settings.providers.items():
        adapters[name] = _adapter(name, cfg, settings)
        out.retry_policies[name] = RetryPolicy(
            max_retries=cfg.max_retries, base_delay=cfg.retry_base_delay, max_delay=cfg.retry_max_delay
        )
    for name, adapter in adapters.items():
        if isinstance(adapter, ChatProvider):
            out.chat[name] = adapter
        if isinstance(adapter, ImageProvider):
            out.image[name] = adapter
        if isinstance(adapter, VideoProvider):
            out.video[name] = adapter
        if isinstance(adapter, EmbeddingProvider):
            out.embedding[name] = adapter
        close = getattr(adapter, "aclose", None)
        if close is not None:
            out.closers.append(close)
    out.models = model_infos(settings) if settings.models else list(local_models())
    return out
