"""Model catalogue slice."""

from gateway.models.routes import ModelsController

__all__ = ["ModelsController"]
