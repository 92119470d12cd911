"""POST /v1/responses and GET /v1/responses/{id}: the OpenAI Responses API over ChatService."""

from gateway.responses.routes import ResponsesController

__all__ = ["ResponsesController"]
