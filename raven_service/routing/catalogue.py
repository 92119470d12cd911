"""The model catalogue: slug -> ModelInfo, and per-model parameter filtering."""

from __future__ import annotations

import msgspec

from raven_service.core.errors import InvalidArgument, NotFound
from raven_service.core.types import ChatRequest, ModelInfo


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
        else:
            changes[name] = None
    if "tools" in changes:
        changes["tool_choice"] = None
    changes["extra"] = extra
    return msgspec.structs.replace(req, **changes), tuple(dropped)
