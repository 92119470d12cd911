"""The `raven` command: serve, keys, db, usage.

Every command takes --config/--data-dir and the RAVEN_* environment, and works on the store
directly, so `raven keys ...` works whether or not a server is running on that state.

Bad flags and values (SPEC §10) answer with one line on stderr and exit status 2, never a
traceback; an unexpected failure is one line and exit status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import logging
import sys
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, NoReturn

import msgspec

from raven_service.config import ConfigError, Settings, load_settings

if TYPE_CHECKING:
    from raven_service.storage.postgres import PostgresStore
    from raven_service.storage.sqlite import SqliteStore


#: The largest --rpm / --concurrency (stored as 64-bit integers; far beyond any real limit).
MAX_COUNT = 1_000_000_000
#: The largest --credits amount the stores can hold exactly (pico-credits in a signed 64-bit integer).
MAX_CREDITS = Decimal("9000000")


class UsageError(Exception):
    """A bad flag or value: one line on stderr, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line ("raven: error: ...") and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _count(text: str) -> int:
    """An argparse type: an integer in [0, MAX_COUNT]."""
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 0 <= value <= MAX_COUNT:
        raise argparse.ArgumentTypeError(f"{text} is out of range (0 to {MAX_COUNT:,})")
    return value


def _port(text: str) -> int:
    """An argparse type: a TCP port (0 picks a free one)."""
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text} is not a port number (0 to 65535)")
    return value


def _workers(text: str) -> int:
    value = _count(text)
    if not 1 <= value <= 256:
        raise argparse.ArgumentTypeError(f"{text} is out of range (1 to 256)")
    return value


def _credits(text: str) -> Decimal:
    """An argparse type: a decimal amount in [0, MAX_CREDITS]."""
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"{text!r} is not a decimal number") from None
    if not value.is_finite() or value < 0:
        raise argparse.ArgumentTypeError(f"{text} must be a finite amount >= 0")
    if value > MAX_CREDITS:
        raise argparse.ArgumentTypeError(f"{text} is above the largest storable amount ({MAX_CREDITS})")
    return value


def _settings(args: argparse.Namespace, **extra) -> Settings:
    overrides = {"data_dir": args.data_dir, **extra}
    return load_settings(args.config, overrides)


def _store(settings: Settings) -> SqliteStore | PostgresStore:
    from raven_service.server import open_store

    return open_store(settings)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _run(coro) -> int:
    try:
        return asyncio.run(coro)
    except ConfigError as exc:
        print(f"raven: configuration error: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    except UsageError as exc:
        print(f"raven: error: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # e.g. the database schema is behind: say so plainly
        if "raven db upgrade" not in str(exc):
            print(f"raven: failed: {_one_line(str(exc))}", file=sys.stderr)
            return 1
        print(f"raven: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except OSError as exc:  # a port in use, an unreadable data directory ...
        print(f"raven: failed: {_one_line(str(exc))}", file=sys.stderr)
        return 1


async def _serve(args: argparse.Namespace) -> int:
    settings = _settings(args, host=args.host, http_port=args.http_port, grpc_port=args.grpc_port)
    if args.check_config:
        from raven_service.wiring import build_providers

        providers = build_providers(settings)
        print(f"config OK: {len(settings.providers)} provider(s), {len(providers.models)} model(s)")
        return 0
    from raven_service.server import serve

    if settings.admin_key and not args.worker:
        await _ensure_admin_key(settings)
    return await serve(settings, worker=args.worker, tune_gc=True)


async def _ensure_admin_key(settings: Settings) -> None:
    """RAVEN_ADMIN_KEY: make sure the admin key exists before the server starts (so the first start
    creates no other key and prints no secret)."""
    from raven_service.policy.auth import ensure_admin_key

    store = _store(settings)
    await store.open()
    try:
        created = await ensure_admin_key(store, settings.admin_key, rpm=settings.default_rpm,
                                         concurrency=settings.default_concurrency)
    finally:
        await store.close()
    if created is not None:
        print(f"Created the admin API key from RAVEN_ADMIN_KEY ({created.id})", flush=True)


async def _prepare_workers(args: argparse.Namespace) -> int:
    """Checks the shared backends and prepares the shared state once, before the workers start."""
    settings = _settings(args, host=args.host, http_port=args.http_port, grpc_port=args.grpc_port)
    if not (settings.database_url and settings.redis_url):
        print("raven: --workers N > 1 needs the shared backends: set RAVEN_DATABASE_URL (PostgreSQL) and "
              "RAVEN_REDIS_URL (Redis). With the embedded SQLite and in-process limits, each process would "
              "enforce limits on its own.", file=sys.stderr)
        return 2
    from raven_service.policy.auth import create_key

    if settings.admin_key:
        await _ensure_admin_key(settings)
    store = _store(settings)
    await store.open()
    try:
        if await store.count_keys() == 0:
            _, secret = await create_key(store, name="default", rpm=settings.default_rpm,
                                         concurrency=settings.default_concurrency, admin=True)
            print(f"First start: created admin API key (shown once, store it now): {secret}", flush=True)
    finally:
        await store.close()
    print(f"Raven REST gateway: http://{settings.host}:{settings.http_port}/v1  ({args.workers} workers)", flush=True)
    print(f"Raven gRPC service: {settings.host}:{settings.grpc_port}", flush=True)
    return 0


def _key_admin(settings: Settings, store):
    """The service's KeyAdmin on the store directly (so the CLI applies exactly the rules the
    API does), acting as a local admin."""
    from raven_service.app.accounts import KeyAdmin
    from raven_service.core.types import Principal
    from raven_service.wiring import build_providers

    models = [m.id for m in build_providers(settings).models]
    admin = KeyAdmin(store, None, default_rpm=settings.default_rpm, default_concurrency=settings.default_concurrency,
                     credits=store, models=lambda: models, allow_http_webhooks=settings.alert_webhook_allow_http)
    return admin, Principal(key_id="cli", name="cli", admin=True)


def _key_spec(args: argparse.Namespace, *, creating: bool):
    """The KeySpec of `raven keys create|update` flags (the values are checked by KeyAdmin)."""
    from raven_service.app.accounts import KeySpec

    spec = KeySpec()
    if args.name is not None:
        spec.name = args.name
    for name in ("rpm", "concurrency", "tpm"):
        if getattr(args, name) is not None:
            setattr(spec, name, getattr(args, name))
    if args.credits is not None:
        spec.credits = "" if args.credits == "unlimited" else f"{args.credits}"
    if args.budget is not None:
        if args.budget == "none":
            spec.budget = None
        else:
            amount, _, period = args.budget.partition("/")
            spec.budget = (amount, period)
    if args.models is not None:
        spec.models = [m.strip() for m in args.models.split(",") if m.strip()]
    _expiry(args, spec)
    if args.scopes is not None:
        spec.scopes = [s.strip() for s in args.scopes.split(",") if s.strip()]
    if args.admin:
        spec.admin = True
        if args.scopes is None and not creating:
            spec.scopes = ["admin", "inference"]
    if args.tag:
        spec.metadata = _tags(args.tag)
    if args.alert_webhook is not None:
        spec.alert_webhook = args.alert_webhook
    if args.alert_thresholds is not None:
        spec.alert_thresholds = _thresholds(args.alert_thresholds)
    return spec


def _expiry(args: argparse.Namespace, spec) -> None:
    if args.expires is not None and args.expires_in is not None:
        raise UsageError("give either --expires or --expires-in, not both")
    if args.expires is not None:
        spec.expires_at = "" if args.expires == "never" else args.expires
    if args.expires_in is not None:
        spec.expires_in = args.expires_in


def _tags(items: list[str]) -> dict[str, str]:
    tags = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UsageError(f"--tag must look like NAME=VALUE, got {item!r}")
        tags[name] = value
    return tags


def _thresholds(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise UsageError("--alert-thresholds must be whole percentages, e.g. 80,95,100") from None


async def _with_admin(args: argparse.Namespace, action):
    """Runs `action(admin, principal)` on the configured store; bad values exit 2, unknown ids 1."""
    from raven_service.core.errors import InvalidArgument, NotFound

    settings = _settings(args)
    store = _store(settings)
    await store.open()
    try:
        admin, principal = _key_admin(settings, store)
        return await action(admin, principal)
    except InvalidArgument as exc:
        field = (exc.param or "").split(".")[0].split("[")[0]
        flag = {"expires_at": "expires", "metadata": "tag"}.get(field, field).replace("_", "-")
        raise UsageError(f"--{flag}: {exc.message}" if flag else exc.message) from None
    except NotFound as exc:
        print(f"raven: {exc.message}", file=sys.stderr)
        return 1
    finally:
        await store.close()


def _print_key(view) -> None:
    """`raven keys show` / after create and update: the key and its status, one field a line."""
    from raven_service.policy.governance import format_time

    k = view.key
    lines = [
        ("id", k.id), ("name", k.name), ("prefix", k.prefix), ("scopes", ",".join(k.scopes)),
        ("models", ",".join(k.models) or "all"),
        ("expires_at", format_time(k.expires_at) if k.expires_at is not None else "never"),
        ("rpm", k.rpm or "unlimited"), ("concurrency", k.concurrency or "unlimited"), ("tpm", k.tpm or "unlimited"),
        ("credits", "unlimited" if k.credits is None else f"{k.credits.normalize():f}"),
        ("credits_used", f"{k.credits_used.normalize():f}"),
    ]
    if k.budget is not None:
        resets = format_time(view.budget_resets_at) if view.budget_resets_at else "-"
        lines.append(("budget", f"{k.budget.normalize():f}/{k.budget_period} (used {view.budget_used.normalize():f}, "
                                f"resets {resets})"))
    else:
        lines.append(("budget", "none"))
    lines += [
        ("metadata", ",".join(f"{n}={v}" for n, v in sorted(k.metadata.items())) or "-"),
        ("alert_webhook", k.alert_webhook or "-"),
        ("alert_thresholds", ",".join(str(t) for t in k.alert_thresholds)),
        ("revoked", "yes" if k.revoked else "no"),
    ]
    for name, value in lines:
        print(f"{name:<17} {value}")


async def _keys_create(args: argparse.Namespace) -> int:
    if not args.name.strip() or len(args.name) > 200:
        raise UsageError("--name must be 1 to 200 characters")
    spec = _key_spec(args, creating=True)

    async def create(admin, principal) -> int:
        created = await admin.create(principal, spec)
        print(created.secret)
        print(f"created key {created.view.key.id} ({created.view.key.name}); the secret above is shown only once",
              file=sys.stderr)
        if created.view.key.alert_webhook:
            print(f"webhook signing secret (shown only once): {created.webhook_secret}", file=sys.stderr)
        return 0

    return await _with_admin(args, create)


async def _keys_update(args: argparse.Namespace) -> int:
    spec = _key_spec(args, creating=False)

    async def update(admin, principal) -> int:
        _print_key(await admin.update(principal, args.id, spec))
        return 0

    return await _with_admin(args, update)


async def _keys_rotate(args: argparse.Namespace) -> int:
    async def rotate(admin, principal) -> int:
        view, secret = await admin.rotate(principal, args.id, None, args.grace or "")
        print(secret)
        print(f"rotated key {view.key.id}; the old secret works for {args.grace or '24h'} more; the new secret "
              "above is shown only once", file=sys.stderr)
        return 0

    return await _with_admin(args, rotate)


async def _keys_show(args: argparse.Namespace) -> int:
    async def show(admin, principal) -> int:
        _print_key(await admin.get(principal, args.id))
        return 0

    return await _with_admin(args, show)


async def _keys_list(args: argparse.Namespace) -> int:
    store = _store(_settings(args))
    await store.open()
    try:
        keys = await store.list_keys(include_revoked=True)
    finally:
        await store.close()
    print(f"{'ID':<26} {'NAME':<20} {'PREFIX':<8} {'RPM':>6} {'CONC':>5} {'CREDITS':>12} {'USED':>14} FLAGS")
    for k in keys:
        flags = ",".join(f for f, on in (("admin", k.admin), ("revoked", k.revoked)) if on)
        credits = "unlimited" if k.credits is None else f"{k.credits.normalize():f}"
        print(f"{k.id:<26} {k.name[:20]:<20} {k.prefix:<8} {k.rpm:>6} {k.concurrency:>5} {credits:>12} "
              f"{k.credits_used.normalize():>14f} {flags}")
    return 0


async def _keys_revoke(args: argparse.Namespace) -> int:
    store = _store(_settings(args))
    await store.open()
    try:
        key = await store.update_key(args.id, revoked=True)
    finally:
        await store.close()
    if key is None:
        print(f"raven: no key with id {args.id}", file=sys.stderr)
        return 1
    print(f"revoked {key.id} ({key.name})")
    return 0


async def _db_upgrade(args: argparse.Namespace) -> int:
    store = _store(_settings(args))
    applied = await store.upgrade()
    version = await store.current_version()
    await store.close()
    print(f"applied migrations: {applied or 'none'}; schema version {version}")
    return 0


async def _usage_export(args: argparse.Namespace) -> int:
    store = _store(_settings(args))
    await store.open()
    out = sys.stdout
    fields = [f.name for f in msgspec.structs.fields(_record_type())]
    writer = csv.DictWriter(out, fieldnames=fields) if args.format == "csv" else None
    if writer:
        writer.writeheader()
    try:
        async for rec in store.export_usage():
            row = msgspec.to_builtins(rec)
            row["cost"] = f"{rec.cost.normalize():f}"
            if writer:
                row["attempts"] = ";".join(rec.attempts)
                writer.writerow(row)
            else:
                out.write(json.dumps(row) + "\n")
    finally:
        await store.close()
    return 0


def _record_type():
    from raven_service.core.types import UsageRecord

    return UsageRecord


def _key_flags(p: argparse.ArgumentParser, *, creating: bool) -> None:
    """The governance flags shared by `keys create` and `keys update` (SPEC §11)."""
    p.add_argument("--rpm", type=_count, help="requests per minute (0 = unlimited)")
    p.add_argument("--concurrency", type=_count, help="requests in flight (0 = unlimited)")
    p.add_argument("--tpm", type=_count, help="tokens per minute (0 = unlimited)")
    p.add_argument("--credits", type=_credits if creating else _credits_or_unlimited,
                   help="credit limit, a decimal in catalogue price units (default unlimited"
                        + ("" if creating else "; 'unlimited' removes it") + ")")
    p.add_argument("--budget", help="a budget on top of the credits: AMOUNT/day, AMOUNT/week or AMOUNT/month"
                                    + ("" if creating else " ('none' removes it)"))
    p.add_argument("--models", help="allow-list of model slug patterns, comma separated ('a/*,b'); '' = all")
    p.add_argument("--expires", help="expiry, RFC 3339 (2027-01-01T00:00:00Z)" + ("" if creating else "; 'never'"))
    p.add_argument("--expires-in", help="expiry as a duration from now (30d, 12h)")
    p.add_argument("--scopes", help="comma separated: inference, admin")
    p.add_argument("--admin", action="store_true", help="shortcut for --scopes admin,inference")
    p.add_argument("--tag", action="append", metavar="NAME=VALUE",
                   help="a string tag (repeatable)" + ("" if creating else "; replaces all tags"))
    p.add_argument("--alert-webhook", help="https URL receiving signed budget/credit alerts" +
                   ("" if creating else " ('' removes it)"))
    p.add_argument("--alert-thresholds", help="percentages, comma separated (default 80,95,100)")


def _credits_or_unlimited(text: str) -> Decimal | str:
    return "unlimited" if text == "unlimited" else _credits(text)


def parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--config", help="TOML config file (or RAVEN_CONFIG)")
    common.add_argument("--data-dir", help="state directory for the embedded SQLite store (or RAVEN_DATA_DIR)")
    p = _Parser(prog="raven", description="Raven: an OpenAI-compatible LLM API router")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    s = sub.add_parser("serve", parents=[common], help="run the gRPC service and the REST gateway")
    s.add_argument("--host")
    s.add_argument("--http-port", type=_port)
    s.add_argument("--grpc-port", type=_port)
    s.add_argument("--check-config", action="store_true", help="validate the config and exit")
    s.add_argument("--workers", type=_workers, default=1,
                   help="processes sharing the ports (SO_REUSEPORT); > 1 needs PostgreSQL and Redis")
    s.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    s.set_defaults(func=_serve)

    k = sub.add_parser("keys", help="manage API keys").add_subparsers(dest="keys_command", required=True,
                                                                     parser_class=_Parser)
    kc = k.add_parser("create", parents=[common], help="create a key and print its secret once")
    kc.add_argument("--name", required=True)
    _key_flags(kc, creating=True)
    kc.set_defaults(func=_keys_create)
    ku = k.add_parser("update", parents=[common], help="change a key's name, limits or governance fields")
    ku.add_argument("id")
    ku.add_argument("--name")
    _key_flags(ku, creating=False)
    ku.set_defaults(func=_keys_update)
    kt = k.add_parser("rotate", parents=[common], help="give a key a new secret (printed once)")
    kt.add_argument("id")
    kt.add_argument("--grace", help="how long the old secret keeps working (e.g. 2s, 15m, 24h, 7d; default 24h)")
    kt.set_defaults(func=_keys_rotate)
    ks = k.add_parser("show", parents=[common], help="show a key, its credits and budget")
    ks.add_argument("id")
    ks.set_defaults(func=_keys_show)
    kl = k.add_parser("list", parents=[common], help="list keys")
    kl.set_defaults(func=_keys_list)
    kr = k.add_parser("revoke", parents=[common], help="revoke a key")
    kr.add_argument("id")
    kr.set_defaults(func=_keys_revoke)

    d = sub.add_parser("db", help="database schema").add_subparsers(dest="db_command", required=True,
                                                                   parser_class=_Parser)
    du = d.add_parser("upgrade", parents=[common], help="apply schema migrations")
    du.set_defaults(func=_db_upgrade)

    u = sub.add_parser("usage", help="usage records").add_subparsers(dest="usage_command", required=True,
                                                                    parser_class=_Parser)
    ue = u.add_parser("export", parents=[common], help="write every usage record to stdout")
    ue.add_argument("--format", choices=("csv", "jsonl"), default="jsonl")
    ue.set_defaults(func=_usage_export)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "serve":
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            pass
    try:
        if args.command == "serve" and args.workers > 1 and not args.check_config:
            code = _run(_prepare_workers(args))
            if code:
                return code
            from raven_service.supervisor import run_workers

            return run_workers(sys.argv[1:] if argv is None else argv, args.workers)
        return _run(args.func(args))
    except ConfigError as exc:
        print(f"raven: configuration error: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    except Exception as exc:  # never a traceback for the operator; the detail is in the log
        logging.getLogger("raven.cli").debug("command failed", exc_info=exc)
        print(f"raven: failed: {type(exc).__name__}: {_one_line(str(exc))}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
