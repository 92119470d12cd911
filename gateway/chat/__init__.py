"""Chat completions slice: schemas, JSON <-> proto conversion, routes."""

from gateway.chat.routes import ChatController

__all__ = ["ChatController"]
