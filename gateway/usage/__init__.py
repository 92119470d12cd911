"""Usage slice: GET /v1/generation, /v1/generations, /v1/usage."""

from gateway.usage.routes import GenerationController, GenerationsController, UsageController

__all__ = ["GenerationController", "GenerationsController", "UsageController"]
