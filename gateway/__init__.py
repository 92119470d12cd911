"""Raven's REST + SSE gateway: the OpenAI-compatible HTTP surface over the raven.v1 gRPC services.

It parses and type-checks HTTP, translates JSON <-> proto, calls gRPC, maps gRPC status to HTTP and
the OpenAI error body, and streams SSE. It holds no business logic and never imports raven_service.
"""

from gateway.app import create_app
from gateway.config import GatewaySettings

__all__ = ["GatewaySettings", "create_app"]
