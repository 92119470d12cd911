"""The composition root: builds the domain from settings, the gRPC server, and `serve()`.

The only module that wires adapters (storage, limiter, providers) to use cases and servicers.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from raven.v1 import (
    chat_service_pb2,
    chat_service_pb2_grpc,
    embeddings_service_pb2,
    embeddings_service_pb2_grpc,
    file_service_pb2,
    file_service_pb2_grpc,
    image_service_pb2,
    image_service_pb2_grpc,
    key_service_pb2,
    key_service_pb2_grpc,
    model_service_pb2,
    model_service_pb2_grpc,
    response_service_pb2,
    response_service_pb2_grpc,
    usage_service_pb2,
    usage_service_pb2_grpc,
    video_service_pb2,
    video_service_pb2_grpc,
)
from raven_service.accounting.ledger import Ledger
from raven_service.api.accounts import KeyServicer
from raven_service.api.chat import ChatServicer
from raven_service.api.embeddings import EmbeddingsServicer
from raven_service.api.guard import RequestGuard, core_limit
from raven_service.api.h2grpc import H2GrpcServer
from raven_service.api.inproc import HandlerRegistry, InProcessChannel
from raven_service.api.media import FileServicer, ImageServicer, ModelServicer, VideoServicer
from raven_service.api.observe import ACCESS_LOG, RequestObserver, note_record
from raven_service.api.responses import ResponseServicer
from raven_service.api.usage import UsageServicer
from raven_service.app.accounts import KeyAdmin
from raven_service.app.admission import Admitter, HoldKeeper
from raven_service.app.alerts import AlertWatcher
from raven_service.app.chat import ChatUseCase
from raven_service.app.embeddings import EmbeddingsUseCase
from raven_service.app.media import FileUseCase, ImageUseCase, VideoUseCase
from raven_service.app.responses import ResponseUseCase
from raven_service.app.usage import UsageQueries
from raven_service.config import Settings
from raven_service.core.ports import Limiter, Store
from raven_service.jobs.files import OutputJanitor
from raven_service.jobs.videos import VideoWorker
from raven_service.metrics import ServiceMetrics
from raven_service.notify.webhooks import WebhookSender
from raven_service.policy.auth import Authenticator, create_key
from raven_service.policy.ratelimit import InProcessLimiter
from raven_service.routing.catalogue import Catalogue
from raven_service.routing.router import CircuitBreakers, Router
from raven_service.wiring import build_providers

if TYPE_CHECKING:  # imported lazily at run time: the PostgreSQL backend pulls in asyncpg
    from raven_service.storage.postgres import PostgresStore
    from raven_service.storage.sqlite import SqliteStore

log = logging.getLogger("raven.server")

SERVICE_NAMES = (
    chat_service_pb2.DESCRIPTOR.services_by_name["ChatService"].full_name,
    model_service_pb2.DESCRIPTOR.services_by_name["ModelService"].full_name,
    image_service_pb2.DESCRIPTOR.services_by_name["ImageService"].full_name,
    video_service_pb2.DESCRIPTOR.services_by_name["VideoService"].full_name,
    file_service_pb2.DESCRIPTOR.services_by_name["FileService"].full_name,
    embeddings_service_pb2.DESCRIPTOR.services_by_name["EmbeddingsService"].full_name,
    key_service_pb2.DESCRIPTOR.services_by_name["KeyService"].full_name,
    usage_service_pb2.DESCRIPTOR.services_by_name["UsageService"].full_name,
    response_service_pb2.DESCRIPTOR.services_by_name["ResponseService"].full_name,
)
MAX_MESSAGE = 64 * 1024 * 1024


def open_store(settings: Settings) -> SqliteStore | PostgresStore:
    if settings.database_url:
        from raven_service.storage.postgres import PostgresStore  # scale-out backend

        return PostgresStore(settings.database_url, auto_upgrade=settings.database_auto_upgrade)
    from raven_service.storage.sqlite import SqliteStore

    return SqliteStore(Path(settings.data_dir) / "raven.db")


def open_limiter(settings: Settings) -> Limiter:
    if settings.redis_url:
        from raven_service.policy.redis_limits import RedisLimiter  # scale-out backend

        return RedisLimiter(settings.redis_url, lease_ttl=settings.lease_ttl_seconds, prefix=settings.redis_prefix)
    return InProcessLimiter()


@dataclass
class Services:
    """Every long-lived object of one service instance."""

    settings: Settings
    store: Store
    limiter: Limiter
    auth: Authenticator
    admitter: Admitter
    usage: Ledger
    holds: HoldKeeper
    catalogue: Catalogue
    router: Router
    chat: ChatUseCase
    images: ImageUseCase
    videos: VideoUseCase
    files: FileUseCase
    embeddings: EmbeddingsUseCase
    keys: KeyAdmin
    usage_queries: UsageQueries
    responses: ResponseUseCase
    worker: VideoWorker
    metrics: ServiceMetrics
    closers: list = field(default_factory=list)
    #: The per-call span and access-log wrapper (api/observe.py); `tracing` is None unless otel_endpoint.
    observer: RequestObserver = field(default_factory=RequestObserver)
    tracing: Any = None
    janitor: OutputJanitor | None = None
    alerts: AlertWatcher | None = None  # key alert webhooks (SPEC §11)
    webhooks: WebhookSender | None = None

    async def close(self) -> None:
        await self.worker.stop()
        if self.janitor is not None:
            await self.janitor.stop()
        await self.admitter.drain()
        await self.usage.close()
        await self.holds.stop()
        for closer in self.closers:
            with contextlib.suppress(Exception):
                await closer()
        await self.limiter.close()
        await self.store.close()
        if self.tracing is not None:
            await asyncio.to_thread(self.tracing.shutdown)  # exports the spans still pending


async def build_services(settings: Settings, *, store: Store | None = None, start_workers: bool = True) -> Services:
    store = store or open_store(settings)
    await store.open()
    limiter = open_limiter(settings)
    providers = build_providers(settings)
    catalogue = Catalogue(providers.models)
    metrics = ServiceMetrics()
    tracing = None
    if settings.otel_endpoint:  # the SDK and exporter are imported only when tracing is on
        from raven_service.telemetry import Tracing

        tracing = Tracing(settings.otel_endpoint, settings.otel_service_name)
        providers.chat = tracing.wrap_chat(providers.chat)  # one CLIENT span per upstream attempt
        providers.image = tracing.wrap_images(providers.image)

    def observe_usage(rec) -> None:
        note_record(rec)  # the current call's span and access line get the record's model, tokens, status
        metrics.observe(rec)

    usage = Ledger(store, spool_dir=Path(settings.data_dir) / "spool", max_memory=settings.usage_queue_size,
                   flush_interval=settings.usage_flush_interval, observer=observe_usage)
    usage.start()
    auth = Authenticator(store, failure_limit=settings.auth_failure_limit_per_minute)
    admitter = Admitter(store, limiter, usage, hold_ttl=settings.lease_ttl_seconds,
                        on_overspend=metrics.overspend, slice_factor=settings.credit_slice_factor,
                        slice_idle_seconds=settings.credit_slice_idle_seconds)
    holds = HoldKeeper(store, admitter.instance_id, ttl=settings.lease_ttl_seconds, slices=admitter.slices)
    webhooks = WebhookSender(attempts=settings.alert_webhook_attempts,
                             retry_base=settings.alert_webhook_retry_seconds,
                             allow_http=settings.alert_webhook_allow_http)
    lease = settings.alert_webhook_lease_seconds
    alerts = AlertWatcher(store, store, usage, webhooks, lease=lease, sweep_every=min(60.0, max(0.05, lease / 4)))
    admitter.on_alerting = alerts.notify
    breakers = CircuitBreakers(threshold=settings.breaker_threshold, cooldown=settings.breaker_cooldown_seconds)
    router = Router(providers.chat, providers.retry_policies, breakers)
    worker = VideoWorker(store, store, catalogue, providers.video, concurrency=settings.video_workers,
                         lease_seconds=settings.lease_ttl_seconds, task_timeout=settings.video_task_timeout)
    services = Services(
        settings=settings, store=store, limiter=limiter, auth=auth, admitter=admitter, usage=usage, holds=holds,
        catalogue=catalogue, router=router,
        chat=ChatUseCase(catalogue, router, admitter, request_timeout=settings.request_timeout),
        images=ImageUseCase(catalogue, providers.image, store, admitter),
        videos=VideoUseCase(catalogue, store, admitter, wake=worker.wake,
                            hold_seconds=settings.video_task_timeout + 4 * settings.lease_ttl_seconds + 60),
        files=FileUseCase(store, ttl=settings.output_ttl_seconds),
        embeddings=EmbeddingsUseCase(catalogue, providers.embedding, admitter, router,
                                      request_timeout=settings.request_timeout),
        keys=KeyAdmin(store, auth, default_rpm=settings.default_rpm,
                      default_concurrency=settings.default_concurrency, credits=store,
                      models=lambda: [m.id for m in catalogue.list()],
                      allow_http_webhooks=settings.alert_webhook_allow_http),
        usage_queries=UsageQueries(store, store, usage),
        responses=ResponseUseCase(store),
        worker=worker,
        metrics=metrics,
        closers=[alerts.close, webhooks.close, *providers.closers],
        observer=RequestObserver(tracer=tracing.tracer if tracing is not None else None,
                                 access_log=settings.access_log),
        tracing=tracing,
        alerts=alerts,
        webhooks=webhooks,
    )
    holds.start()
    if start_workers:
        alerts.start()
        worker.start()
        services.janitor = OutputJanitor(services.files)
        services.janitor.start()
    return services


def register_servicers(services: Services, target, health_servicer=None):
    """Adds every raven.v1 servicer and the health servicer to `target`: a grpc.aio server, or the
    in-process handler registry (the same servicer objects answer both). Returns the health servicer."""
    s = services
    chat_service_pb2_grpc.add_ChatServiceServicer_to_server(ChatServicer(s.auth, s.chat), target)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(s.auth, s.catalogue, s.admitter), target)
    image_service_pb2_grpc.add_ImageServiceServicer_to_server(ImageServicer(s.auth, s.images, s.admitter), target)
    videos = VideoServicer(s.auth, s.videos, s.admitter, output_ttl=s.files.ttl)
    video_service_pb2_grpc.add_VideoServiceServicer_to_server(videos, target)
    file_service_pb2_grpc.add_FileServiceServicer_to_server(FileServicer(s.auth, s.files, s.admitter), target)
    embeddings_service_pb2_grpc.add_EmbeddingsServiceServicer_to_server(
        EmbeddingsServicer(s.auth, s.embeddings, s.admitter), target)
    key_service_pb2_grpc.add_KeyServiceServicer_to_server(KeyServicer(s.auth, s.keys, s.admitter), target)
    usage_service_pb2_grpc.add_UsageServiceServicer_to_server(
        UsageServicer(s.auth, s.usage_queries, s.admitter), target)
    response_service_pb2_grpc.add_ResponseServiceServicer_to_server(
        ResponseServicer(s.auth, s.responses, s.admitter), target)
    health_servicer = health_servicer or health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, target)
    return health_servicer


REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"


def _register_reflection_v1_descriptor(v1alpha_file) -> None:
    """Adds `grpc/reflection/v1/reflection.proto` to the default descriptor pool, derived from the
    v1alpha file (so reflection can describe the v1 service it serves)."""
    from google.protobuf import descriptor_pb2, descriptor_pool

    pool = descriptor_pool.Default()
    try:
        pool.FindServiceByName(REFLECTION_V1)
        return
    except KeyError:
        pass
    fdp = descriptor_pb2.FileDescriptorProto()
    v1alpha_file.CopyToProto(fdp)
    old, new = ".grpc.reflection.v1alpha.", ".grpc.reflection.v1."
    fdp.name, fdp.package = "grpc/reflection/v1/reflection.proto", "grpc.reflection.v1"
    for message in fdp.message_type:
        for f in message.field:
            if f.type_name:  # assigning "" would mark scalar fields as message-typed
                f.type_name = f.type_name.replace(old, new)
    for service in fdp.service:
        for method in service.method:
            method.input_type = method.input_type.replace(old, new)
            method.output_type = method.output_type.replace(old, new)
    pool.Add(fdp)


def enable_reflection(server: Any) -> None:
    """Server reflection under both `grpc.reflection.v1alpha` (grpcio's servicer) and
    `grpc.reflection.v1` (what current grpcurl / buf curl ask first). grpcio-reflection only ships
    v1alpha; the v1 messages are wire-identical (same fields and numbers, only the package differs),
    so the same servicer answers v1 through the v1alpha (de)serialisers."""
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    _register_reflection_v1_descriptor(reflection_pb2.DESCRIPTOR)
    names = (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME, REFLECTION_V1)
    servicer = reflection.aio.ReflectionServicer(names)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    handler = grpc.method_handlers_generic_handler(REFLECTION_V1, {
        "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
            servicer.ServerReflectionInfo,
            request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
            response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
        )
    })
    server.add_generic_rpc_handlers((handler,))


def create_server(services: Services, address: str, *, reuse_port: bool = False,
                  local_address: str | None = None) -> tuple[Any, int]:
    """The gRPC server with every servicer, health and reflection, bound to `address`
    ("127.0.0.1:0" picks a free port): `H2GrpcServer` (api/h2grpc.py), or grpc.aio's with
    `grpc_server = "grpcio"`. Returns the server (not started) and the bound port."""
    guard = RequestGuard(services.settings.max_body_bytes)
    limit = core_limit(services.settings.max_body_bytes)
    server: Any
    if services.settings.grpc_server == "h2":
        observer = services.observer

        def wrap(method: str, handler: Any) -> Any:
            if method.startswith("/grpc."):  # health and reflection: grpc's own servicers
                return handler
            handler = guard.wrap(handler)
            return observer.wrap(method, handler)  # outermost, so guarded rejections are observed too

        server = H2GrpcServer(max_receive_message_length=limit, max_send_message_length=MAX_MESSAGE,
                              reuse_port=reuse_port, wrap=wrap)
    else:
        interceptors: list[grpc.aio.ServerInterceptor] = [guard]
        if services.observer.enabled:  # outermost, so guarded rejections are observed too
            interceptors.insert(0, services.observer.interceptor())
        server = grpc.aio.server(interceptors=interceptors, options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", MAX_MESSAGE),
            ("grpc.so_reuseport", 1 if reuse_port else 0),
        ])
    health_servicer = register_servicers(services, server)
    server.health = health_servicer
    s = services
    if s.settings.grpc_reflection:
        enable_reflection(server)
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot bind gRPC address {address}")
    if local_address:
        server.add_insecure_port(local_address)  # e.g. unix:/tmp/raven-<pid>.sock for the co-located gateway
    return server, port


async def mark_serving(server: Any, serving: bool = True) -> None:
    status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
    hs = server.health
    await hs.set("", status)
    for name in SERVICE_NAMES:
        await hs.set(name, status)


async def ensure_first_key(services: Services) -> str | None:
    """On an empty store, creates an admin key and returns its secret (shown once)."""
    if await services.store.count_keys() > 0:
        return None
    _, secret = await create_key(services.store, name="default", rpm=services.settings.default_rpm,
                                 concurrency=services.settings.default_concurrency, admin=True)
    return secret


def _http_socket(host: str, port: int, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def configure_access_log() -> None:
    """`raven.access` lines (already JSON) go to stderr as they are, one per line."""
    if ACCESS_LOG.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    ACCESS_LOG.addHandler(handler)
    ACCESS_LOG.setLevel(logging.INFO)
    ACCESS_LOG.propagate = False


#: The collector's thresholds once serving. CPython's default (700, 10, 10) ran a collection every
#: ~0.5 ms of a loaded server's life, and a full one (~100 ms over the ~100,000 objects start-up
#: leaves) every second, finding nothing: a request leaves no reference cycles behind. Measured with
#: gc.callbacks at c=64 (bench/raven-bench.toml, one core): 17 % of the process's CPU went to the
#: collector. Frozen and with these thresholds, a steady c=64 load runs a young collection every few
#: seconds (~10 ms of 10 s), and leaked cycles (exceptions with tracebacks, mostly: abandoned
#: streams) are collected once 10,000 accumulate. So a request must leave no cycle behind: one per
#: gRPC call and per in-process stream did, and held memory until a full collection, minutes apart
#: (tests/service/test_no_reference_cycles.py). The memory soak (bench/soak.py, 2.5 min) ended at
#: 115.7 MiB with 10,000, 117.9 with 20,000; 10 minutes with 50,000 reached 123 MiB.
GC_THRESHOLDS: Final = (10_000, 20, 20)


def settle_heap() -> None:
    """Once the server is up: collect start-up's garbage, freeze the rest (imports, wiring, config)
    out of the collector's view, and make young-generation collections rare (`GC_THRESHOLDS`)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def serve(settings: Settings, *, ready: asyncio.Event | None = None, stop: asyncio.Event | None = None,
                worker: bool = False, tune_gc: bool = False) -> int:
    """Runs the gRPC service and the REST gateway in this process until SIGTERM/SIGINT (or `stop`).

    The gateway reaches the co-located service through an in-process channel (or, with
    `gateway_link = "unix"`, over a private unix socket). With `worker` (one of
    `raven serve --workers N`), both public ports are bound with SO_REUSEPORT so N processes share
    them, and the supervisor, not this process, prints the addresses and the first key.

    Shutdown drains: the gateway stops accepting connections and waits for in-flight requests and
    streams, the gRPC server finishes its calls within a grace period, claimed video tasks go back
    to the queue and pending usage records are written. Returns the exit code (0). With `tune_gc`
    (the `raven serve` process; not set by tests that serve inside their own process) the heap is
    settled (`settle_heap`) once both ports serve.
    """
    import uvicorn

    from gateway.app import create_app
    from gateway.config import GatewaySettings

    services = await build_services(settings)
    local = Path(tempfile.gettempdir()) / f"raven-grpc-{os.getpid()}.sock"
    local.unlink(missing_ok=True)
    unix_link = settings.gateway_link == "unix"
    grpc_server, grpc_port = create_server(services, f"{settings.host}:{settings.grpc_port}", reuse_port=worker,
                                           local_address=f"unix:{local}" if unix_link else None)
    await grpc_server.start()
    await mark_serving(grpc_server)
    secret = None if worker else await ensure_first_key(services)

    gw_settings = GatewaySettings(
        grpc_target=f"unix:{local}",
        max_body_bytes=settings.max_body_bytes,
        keepalive_interval=settings.sse_keepalive_seconds,
        public_base_url=settings.public_base_url or None,
        call_deadline=settings.request_timeout + 60,
        access_log=settings.access_log,
    )
    if settings.access_log:
        configure_access_log()
    channel = None
    if not unix_link:  # the same servicer objects, called without a socket (see api/inproc.py)
        registry = HandlerRegistry()
        register_servicers(services, registry, health_servicer=grpc_server.health)
        services.observer.wrap_registry(registry.handlers)
        channel = InProcessChannel(registry)
    exposition = None
    if worker and os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # `--workers N`: every worker's metrics live in files under that directory (set per run by the
        # supervisor); /metrics on any worker serves their sum.
        from prometheus_client import CollectorRegistry
        from prometheus_client.multiprocess import MultiProcessCollector

        exposition = CollectorRegistry()
        MultiProcessCollector(exposition)
    app = create_app(gw_settings, channel=channel, metrics_registry=services.metrics.registry,
                     metrics_exposition=exposition)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", loop="none",
                            http="httptools", timeout_graceful_shutdown=25)

    class _Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):  # we handle signals ourselves
            yield

    http = _Server(config)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        sock = _http_socket(settings.host, settings.http_port, worker)
    except OSError:
        await grpc_server.stop(0)
        await services.close()
        local.unlink(missing_ok=True)
        raise
    http_task = asyncio.create_task(http.serve(sockets=[sock]))
    while not http.started:
        if http_task.done():
            await http_task
            await grpc_server.stop(0)
            await services.close()
            raise OSError(f"cannot start the REST gateway on {settings.host}:{settings.http_port}")
        await asyncio.sleep(0.02)
    http_port = sock.getsockname()[1]
    if not worker:
        print(f"Raven REST gateway: http://{settings.host}:{http_port}/v1  (docs: /docs)", flush=True)
        print(f"Raven gRPC service: {settings.host}:{grpc_port}  (reflection on: {settings.grpc_reflection})",
              flush=True)
    if secret:
        print(f"First start: created admin API key (shown once, store it now): {secret}", flush=True)
    if tune_gc:
        settle_heap()
    if ready is not None:
        ready.set()
    await stop.wait()
    log.info("shutting down: draining in-flight requests")
    await mark_serving(grpc_server, False)
    http.should_exit = True
    await http_task
    await grpc_server.stop(grace=5)
    await services.close()
    if unix_link:
        local.unlink(missing_ok=True)
    return 0
