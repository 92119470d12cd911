"""The model catalogue: slug -> ModelInfo, and per-model parameter filtering."""

from __future__ import annotations

import msgspec

from raven_service.core.errors import InvalidArgument, NotFound
from raven_service.core.types import MAX_TOKENS_NAMES, ChatRequest, ModelInfo


class Catalogue:
    def __init__(self, models: list[ModelInfo]) -> None:
        self._models = {m.id: m for m in sorted(models, key=lambda m: m.id)}

    def list(self, capability: str = "") -> list[ModelInfo]:
        return [m for m in self._models.values() if not capability or capability in m.capabilities]

    def get(self, slug: str) -> ModelInfo:
        model = self._models.get(slug)
        if model is None:
            raise NotFound(f"The model '{slug}' does not exist.", param="id", code="model_not_found")
        return model

    def resolve(self, slug: str, capability: str, param: str = "model") -> ModelInfo:
        """The model for a request; unknown slugs and wrong capabilities are bad requests (400)."""
        model = self._models.get(slug)
        if model is None:
            raise InvalidArgument(
                f"The model '{slug}' does not exist. See GET /v1/models.", param=param, code="model_not_found"
            )
        if capability not in model.capabilities:
            raise InvalidArgument(
                f"The model '{slug}' does not support {capability}.", param=param, code="model_not_supported"
            )
        return model


def filter_params(req: ChatRequest, model: ModelInfo) -> tuple[ChatRequest, tuple[str, ...]]:
    """Drops the optional parameters the model does not support. Returns the request to send
    and the sorted names dropped. Unsupported parameters are never forwarded and never an error."""
    supported = model.supported_parameters
    req = _bound_name(req, supported)
    dropped = sorted(p for p in req.set_params() if p not in supported)
    if not dropped:
        return req, ()
    changes: dict[str, object] = {}
    extra = dict(req.extra)
    for name in dropped:
        if name in extra:
            del extra[name]
        elif name in ("stop", "tools"):
            changes[name] = ()
        elif name in MAX_TOKENS_NAMES:
            changes["max_tokens"] = None
        else:
            changes[name] = None
    if "tools" in changes:
        changes["tool_choice"] = None
    changes["extra"] = extra
    return msgspec.structs.replace(req, **changes), tuple(dropped)


def bound_name(supported: tuple[str, ...]) -> str:
    """The wire name of an output bound Raven sets itself: ``max_tokens`` unless the model only
    takes ``max_completion_tokens`` (OpenAI gpt-5 / o-series reject ``max_tokens``)."""
    if "max_tokens" not in supported and "max_completion_tokens" in supported:
        return "max_completion_tokens"
    return "max_tokens"


def _bound_name(req: ChatRequest, supported: tuple[str, ...]) -> ChatRequest:
    """The client's name for the output bound is kept; a model that takes only the other name
    gets that one (the bound is the same, only its wire name differs)."""
    name = req.max_tokens_name
    if req.max_tokens is None or name in supported:
        return req
    other = "max_completion_tokens" if name == "max_tokens" else "max_tokens"
    if other in supported:
        return msgspec.structs.replace(req, max_tokens_name=other)
    return req
