"""Anthropic Messages API slice: schemas, JSON <-> proto conversion, routes, Anthropic-shaped errors."""

from gateway.messages.routes import MessagesController

__all__ = ["MessagesController"]
