"""File download slice (generated images and videos)."""

from gateway.files.routes import FilesController

__all__ = ["FilesController"]
