"""The app factory: wires routes, the gRPC channel, dependencies, error handlers and metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
from litestar import Litestar, Router
from litestar.datastructures import State
from prometheus_client import CollectorRegistry

from gateway.auth import auth_first
from gateway.backend import DEADLINE, Backend
from gateway.chat import ChatController
from gateway.config import GatewaySettings
from gateway.console import CONSOLE_ROUTES
from gateway.docs_assets import docs_asset
from gateway.embeddings import EmbeddingsController
from gateway.errors import EXCEPTION_HANDLERS
from gateway.files import FilesController
from gateway.health import healthz
from gateway.images import ImagesController
from gateway.keys import KeyController, KeysController
from gateway.messages import MessagesController
from gateway.metrics import GatewayMetrics, metrics_endpoint
from gateway.models import ModelsController
from gateway.openapi import BEARER, openapi_config, openapi_json
from gateway.responses import ResponsesController
from gateway.usage import GenerationController, GenerationsController, UsageController
from gateway.videos import VideosController

__all__ = ["create_app"]


def create_app(
    settings: GatewaySettings | None = None,
    *,
    channel: grpc.aio.Channel | None = None,
    metrics_registry: CollectorRegistry | None = None,
    metrics_exposition: CollectorRegistry | None = None,
) -> Litestar:
    """Build the REST + SSE gateway.

    Args:
        settings: Gateway settings (defaults: service on 127.0.0.1:50051).
        channel: An open grpc.aio channel to use (tests, or a process sharing one). When None, the
            app's lifespan opens a channel to ``settings.grpc_target`` at startup and closes it at
            shutdown.
        metrics_registry: The Prometheus registry `/metrics` serves (a process running the service
            too passes its own, so one scrape shows both); a private one when None.
        metrics_exposition: The registry `/metrics` serves when it is not ``metrics_registry``
            (``raven serve --workers N``: a multiprocess collector summing every worker).

    Returns:
        The Litestar app.
    """
    settings = settings or GatewaySettings()
    DEADLINE[0] = settings.call_deadline
    metrics = GatewayMetrics(metrics_registry, exposition=metrics_exposition, access_log=settings.access_log)
    state = State({"settings": settings, "metrics": metrics, "backend": Backend(channel) if channel else None})

    @asynccontextmanager
    async def grpc_channel(app: Litestar) -> AsyncIterator[None]:
        """Open the app's own channel unless one was injected."""
        if app.state.backend is not None:
            yield
            return
        backend = Backend.connect(settings.grpc_target)
        app.state.backend = backend
        try:
            yield
        finally:
            app.state.backend = None
            await backend.channel.close()

    v1 = Router(
        path="/v1",
        route_handlers=[
            ChatController,
            MessagesController,
            ModelsController,
            ResponsesController,
            ImagesController,
            EmbeddingsController,
            KeyController,
            KeysController,
            VideosController,
            FilesController,
            GenerationController,
            GenerationsController,
            UsageController,
        ],
        security=BEARER,
        before_request=auth_first,
    )
    return Litestar(
        route_handlers=[v1, healthz, metrics_endpoint, openapi_json, docs_asset, *CONSOLE_ROUTES],
        state=state,
        lifespan=[grpc_channel],
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=[metrics.middleware],
        request_max_body_size=settings.max_body_bytes,
        openapi_config=openapi_config(),
        logging_config=None,
        debug=False,
    )
