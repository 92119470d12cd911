"""Settings: defaults < config file (TOML) < RAVEN_* environment < command-line flags.

The config file holds top-level scalar settings (same names as below), `[providers.NAME]` tables
and `[models."slug"]` tables, exactly as in SPEC §2.
"""

from __future__ import annotations

import os
import re
import tomllib
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import msgspec

from raven_service.core.types import OPTIONAL_PARAMS, ModelInfo, Route

PROVIDER_KINDS = ("openai", "anthropic", "gemini", "local")
CAPABILITIES = ("chat", "tools", "json", "images", "video", "embeddings")


_ADMIN_SECRET = re.compile(r"rk-[A-Za-z0-9_-]{32,256}")


class ConfigError(ValueError):
    """The configuration is invalid; the message says exactly what and where."""


class ProviderConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    kind: str
    base_url: str = ""
    api_key_env: str = ""
    connect_timeout: float = 10.0
    first_byte_timeout: float = 120.0
    idle_timeout: float = 60.0
    max_retries: int = 2
    #: Exponential backoff between retries of one route: base * 2**n (with jitter), capped at
    #: `retry_max_delay`; an upstream Retry-After wins (also capped at `retry_max_delay`).
    retry_base_delay: float = 0.25
    retry_max_delay: float = 4.0
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    #: Use HTTP/2 (httpx + h2) for this upstream; HTTP/1.1 keep-alive (httptools, `providers._h1`) otherwise. Over
    #: https:// HTTP/2 is offered in the TLS handshake (HTTP/1.1 if the upstream declines); over
    #: http:// it means HTTP/2 with prior knowledge (h2c), which the upstream must accept.
    http2: bool = False
    # local provider only
    tokens_per_second: float | None = None
    # anthropic provider only: the anthropic-version header ("" = the adapter's default); versions
    # before 2023-06-01 get structured outputs emulated instead of output_config.format
    anthropic_version: str = ""


class RouteConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    provider: str
    model: str


class ModelConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    routes: list[RouteConfig]
    capabilities: list[str] = msgspec.field(default_factory=lambda: ["chat"])
    context_length: int = 8192
    max_output_tokens: int = 4096
    price_input_per_mtok: float | str = 0
    price_output_per_mtok: float | str = 0
    price_per_image: float | str = 0
    price_per_video_second: float | str = 0
    #: Prompt tokens read from the provider's prompt cache (OpenAI cached_tokens, Anthropic
    #: cache_read_input_tokens, Gemini cachedContentTokenCount); unset = priced as plain input.
    price_cached_input_per_mtok: float | str | None = None
    #: Prompt tokens written to a prompt cache (Anthropic cache_creation_input_tokens); unset = input.
    price_cache_write_per_mtok: float | str | None = None
    #: Embedding models: the vector length when a request names no `dimensions`.
    embedding_dimensions: int = 0
    supported_parameters: list[str] | None = None
    description: str = ""


class Settings(msgspec.Struct, kw_only=True):
    """Every setting; each also comes from the environment as RAVEN_<NAME>."""

    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 50051
    data_dir: str = ".raven"
    database_url: str = ""  # empty: SQLite under data_dir
    redis_url: str = ""  # empty: in-process limits
    redis_prefix: str = "raven:"  # key prefix in Redis (several deployments may share one Redis)
    #: PostgreSQL: apply pending migrations at start instead of refusing an old schema
    #: (`raven db upgrade` is the explicit way; SQLite always migrates itself).
    database_auto_upgrade: bool = False
    config: str = ""  # path of the TOML file this came from
    default_rpm: int = 600
    default_concurrency: int = 32
    max_body_bytes: int = 10 * 1024 * 1024
    sse_keepalive_seconds: float = 10.0
    local_tokens_per_second: float = 100.0
    usage_flush_interval: float = 0.2
    usage_queue_size: int = 10000
    lease_ttl_seconds: float = 30.0  # concurrency leases, credit holds and video-task leases
    #: Credit slices (SPEC §7): an instance leases this many worst cases of a credit-limited key's
    #: request as one hold and carves requests out of it in memory; 0 or 1 = one hold per request.
    credit_slice_factor: int = 32
    #: A credit slice nobody used for this long goes back to the key's balance.
    credit_slice_idle_seconds: float = 2.0
    #: One request as a whole (across retries and fallbacks, to the end of a stream).
    request_timeout: float = 600.0
    #: A video task fails (and is refunded) this long after submission if it has not finished.
    video_task_timeout: float = 1800.0
    #: Generated images and videos are downloadable this long, then deleted (the advertised expiry).
    output_ttl_seconds: float = 7 * 24 * 3600.0
    video_workers: int = 2
    grpc_reflection: bool = True
    #: Circuit breaker per route (provider + upstream model): this many consecutive retryable
    #: failures open it for `breaker_cooldown_seconds`; then one probe request is let through.
    breaker_threshold: int = 5
    breaker_cooldown_seconds: float = 30.0
    public_base_url: str = ""
    #: How the co-located gateway reaches the service: "inprocess" (no socket) or "unix".
    gateway_link: str = "inprocess"
    #: The public gRPC port's server: "h2" (HTTP/2 on the event loop through libnghttp2,
    #: api/h2grpc.py) or "grpcio"
    #: (grpc.aio's C core, which hands every operation to the loop through a poller thread).
    grpc_server: str = "h2"
    log_level: str = "info"
    #: OpenTelemetry: an OTLP/HTTP collector base URL (`http://127.0.0.1:4318`); empty = no tracing.
    otel_endpoint: str = ""
    otel_service_name: str = "raven"
    #: One JSON line per request on stderr (logger `raven.access`): the gateway's HTTP line and the
    #: service's line (request id, key id, model, provider, tokens, status, latency).
    access_log: bool = False
    #: RAVEN_ADMIN_KEY: an `rk-` secret (>= 32 URL-safe characters); start-up ensures an admin key
    #: with it exists and prints no secret (without it, the first start prints a new one).
    admin_key: str = ""
    #: Failed authentications per client address and minute before 429 (0 = no limit).
    auth_failure_limit_per_minute: int = 60
    #: Alert webhooks (SPEC §11): allow loopback http:// receivers (tests, local setups); otherwise
    #: only https:// URLs are accepted. Each alert is tried `alert_webhook_attempts` times, waiting
    #: `alert_webhook_retry_seconds` (doubling) between attempts.
    alert_webhook_allow_http: bool = False
    alert_webhook_attempts: int = 5
    alert_webhook_retry_seconds: float = 1.0
    #: How long a claimed alert's delivery belongs to the instance that claimed it; past that, with
    #: no delivery recorded (the instance died, its queue was full), any instance's sweep resends it.
    #: Keep it above the whole retry schedule (attempts x (10 s timeout + backoff)).
    alert_webhook_lease_seconds: float = 600.0
    providers: dict[str, ProviderConfig] = msgspec.field(default_factory=dict)
    models: dict[str, ModelConfig] = msgspec.field(default_factory=dict)

    @property
    def sqlite_path(self) -> Path:
        return Path(self.data_dir) / "raven.db"


SCALAR_FIELDS = {
    f.name: f.type for f in msgspec.structs.fields(Settings) if f.name not in ("providers", "models")
}


def _coerce(name: str, raw: str, typ: Any) -> Any:
    try:
        if typ is bool:
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if typ is int:
            return int(raw)
        if typ is float:
            return float(raw)
    except ValueError:
        raise ConfigError(f"RAVEN_{name.upper()}={raw!r} is not a valid {typ.__name__}") from None
    return raw


def load_settings(
    config_path: str | None = None,
    overrides: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> Settings:
    """Builds Settings from a TOML file, the environment and explicit overrides."""
    env = os.environ if environ is None else environ
    path = config_path or env.get("RAVEN_CONFIG") or ""
    data: dict[str, Any] = {}
    if path:
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path!r} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path!r} is not valid TOML: {exc}") from None
    unknown = sorted(set(data) - set(SCALAR_FIELDS) - {"providers", "models"})
    if unknown:
        raise ConfigError(f"{path}: unknown top-level setting(s) {', '.join(unknown)}")
    for name, typ in SCALAR_FIELDS.items():
        raw = env.get(f"RAVEN_{name.upper()}")
        if raw is not None and name != "config":
            data[name] = _coerce(name, raw, typ)
    for name, value in (overrides or {}).items():
        if value is not None:
            data[name] = value
    data["config"] = path
    try:
        settings = msgspec.convert(data, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{path or 'settings'}: {exc}") from None
    check_settings(settings)
    return settings


def _decimal(value: float | str, where: str) -> Decimal:
    try:
        d = Decimal(str(value))
    except InvalidOperation:
        raise ConfigError(f"{where}: {value!r} is not a number") from None
    if d < 0 or not d.is_finite():
        raise ConfigError(f"{where}: must be a non-negative number, got {value!r}")
    return d


def _check_provider(name: str, prov: ProviderConfig) -> None:
    where = f"providers.{name}"
    if prov.kind not in PROVIDER_KINDS:
        raise ConfigError(f"{where}.kind: {prov.kind!r} is not one of {', '.join(PROVIDER_KINDS)}")
    if prov.kind != "local" and not prov.base_url:
        raise ConfigError(f"{where}.base_url is required for kind {prov.kind!r}")
    if prov.base_url and not prov.base_url.startswith(("http://", "https://")):
        raise ConfigError(f"{where}.base_url must start with http:// or https://")
    for t in ("connect_timeout", "first_byte_timeout", "idle_timeout"):
        if getattr(prov, t) <= 0:
            raise ConfigError(f"{where}.{t} must be > 0")
    if prov.max_retries < 0:
        raise ConfigError(f"{where}.max_retries must be >= 0")
    if prov.anthropic_version and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", prov.anthropic_version):
        raise ConfigError(f"{where}.anthropic_version must be a date like 2023-06-01")
    for t in ("retry_base_delay", "retry_max_delay"):
        if getattr(prov, t) < 0:
            raise ConfigError(f"{where}.{t} must be >= 0")


def _check_model(slug: str, model: ModelConfig, known: set[str]) -> None:
    where = f'models."{slug}"'
    if not model.routes:
        raise ConfigError(f"{where}.routes must list at least one route")
    for i, route in enumerate(model.routes):
        if route.provider not in known:
            raise ConfigError(f"{where}.routes[{i}].provider: unknown provider {route.provider!r}")
    for cap in model.capabilities:
        if cap not in CAPABILITIES:
            raise ConfigError(f"{where}.capabilities: {cap!r} is not one of {', '.join(CAPABILITIES)}")
    if model.context_length <= 0:
        raise ConfigError(f"{where}.context_length must be > 0")
    for p in ("price_input_per_mtok", "price_output_per_mtok", "price_per_image", "price_per_video_second",
              "price_cached_input_per_mtok", "price_cache_write_per_mtok"):
        if getattr(model, p) is not None:
            _decimal(getattr(model, p), f"{where}.{p}")
    if model.embedding_dimensions < 0:
        raise ConfigError(f"{where}.embedding_dimensions must be >= 0")


def check_settings(settings: Settings) -> None:
    """Validates values and cross-references; raises ConfigError naming the exact key."""
    if settings.gateway_link not in ("inprocess", "unix"):
        raise ConfigError("gateway_link must be 'inprocess' or 'unix'")
    if settings.grpc_server not in ("h2", "grpcio"):
        raise ConfigError("grpc_server must be 'h2' or 'grpcio'")
    if settings.admin_key and not _ADMIN_SECRET.fullmatch(settings.admin_key):
        raise ConfigError("RAVEN_ADMIN_KEY (admin_key) must be 'rk-' followed by 32 to 256 URL-safe characters "
                          "(A-Z, a-z, 0-9, '-', '_'); the value given is not")
    if settings.auth_failure_limit_per_minute < 0:
        raise ConfigError("auth_failure_limit_per_minute must be >= 0")
    if not settings.alert_webhook_lease_seconds > 0:
        raise ConfigError("alert_webhook_lease_seconds must be > 0")
    if settings.otel_endpoint and not settings.otel_endpoint.startswith(("http://", "https://")):
        raise ConfigError("otel_endpoint must be an http:// or https:// URL (an OTLP/HTTP collector)")
    if settings.breaker_threshold < 1:
        raise ConfigError("breaker_threshold must be >= 1")
    if settings.breaker_cooldown_seconds <= 0:
        raise ConfigError("breaker_cooldown_seconds must be > 0")
    for name, prov in settings.providers.items():
        _check_provider(name, prov)
    known = set(settings.providers) | {"local"}
    for slug, model in settings.models.items():
        _check_model(slug, model, known)


def model_infos(settings: Settings) -> list[ModelInfo]:
    """The configured catalogue as domain objects."""
    out = []
    for slug, m in settings.models.items():
        where = f'models."{slug}"'
        out.append(
            ModelInfo(
                id=slug,
                routes=tuple(Route(provider=r.provider, model=r.model) for r in m.routes),
                capabilities=tuple(m.capabilities),
                context_length=m.context_length,
                max_output_tokens=m.max_output_tokens,
                price_input_per_mtok=_decimal(m.price_input_per_mtok, where),
                price_output_per_mtok=_decimal(m.price_output_per_mtok, where),
                price_per_image=_decimal(m.price_per_image, where),
                price_per_video_second=_decimal(m.price_per_video_second, where),
                price_cached_input_per_mtok=None if m.price_cached_input_per_mtok is None
                else _decimal(m.price_cached_input_per_mtok, where),
                price_cache_write_per_mtok=None if m.price_cache_write_per_mtok is None
                else _decimal(m.price_cache_write_per_mtok, where),
                embedding_dimensions=m.embedding_dimensions,
                supported_parameters=tuple(
                    m.supported_parameters if m.supported_parameters is not None else OPTIONAL_PARAMS
                ),
                description=m.description,
            )
        )
    return out
