"""Image generation slice."""

from gateway.images.routes import ImagesController

__all__ = ["ImagesController"]
