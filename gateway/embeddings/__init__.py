"""Embeddings slice."""

from gateway.embeddings.routes import EmbeddingsController

__all__ = ["EmbeddingsController"]
