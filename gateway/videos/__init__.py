"""Video generation task slice."""

from gateway.videos.routes import VideosController

__all__ = ["VideosController"]
