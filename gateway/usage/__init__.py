"""Usage records slice (GET /v1/generation)."""

from gateway.usage.routes import GenerationController

__all__ = ["GenerationController"]
