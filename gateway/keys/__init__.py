"""Key administration slice (SPEC §11): GET /v1/key and /v1/keys CRUD + rotate."""

from gateway.keys.routes import KeyController, KeysController

__all__ = ["KeyController", "KeysController"]
