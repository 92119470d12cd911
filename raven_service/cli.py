"""The `raven` command: serve, keys, db, usage.

Every command takes --config/--data-dir and the RAVEN_* environment, and works on the store
directly, so `raven keys ...` works whether or not a server is running on that state.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import logging
import sys
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING

import msgspec

from raven_service.config import ConfigError, Settings, load_settings

if TYPE_CHECKING:
    from raven_service.storage.postgres import PostgresStore
    from raven_service.storage.sqlite import SqliteStore


def _settings(args: argparse.Namespace, **extra) -> Settings:
    overrides = {"data_dir": args.data_dir, **extra}
    return load_settings(args.config, overrides)


def _store(settings: Settings) -> SqliteStore | PostgresStore:
    from raven_service.server import open_store

    return open_store(settings)


def _run(coro) -> int:
    try:
        return asyncio.run(coro)
    except ConfigError as exc:
        print(f"raven: configuration error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # e.g. the database schema is behind: say so plainly
        if "raven db upgrade" not in str(exc):
            raise
        print(f"raven: {exc}", file=sys.stderr)
        return 2


async def _serve(args: argparse.Namespace) -> int:
    settings = _settings(args, host=args.host, http_port=args.http_port, grpc_port=args.grpc_port)
    if args.check_config:
        from raven_service.providers.registry import build_providers

        providers = build_providers(settings)
        print(f"config OK: {len(settings.providers)} provider(s), {len(providers.models)} model(s)")
        return 0
    from raven_service.server import serve

    return await serve(settings, worker=args.worker)


async def _prepare_workers(args: argparse.Namespace) -> int:
    """Checks the shared backends and prepares the shared state once, before the workers start."""
    settings = _settings(args, host=args.host, http_port=args.http_port, grpc_port=args.grpc_port)
    if not (settings.database_url and settings.redis_url):
        print("raven: --workers N > 1 needs the shared backends: set RAVEN_DATABASE_URL (PostgreSQL) and "
              "RAVEN_REDIS_URL (Redis). With the embedded SQLite and in-process limits, each process would "
              "enforce limits on its own.", file=sys.stderr)
        return 2
    from raven_service.policy.auth import create_key

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


async def _keys_create(args: argparse.Namespace) -> int:
    from raven_service.policy.auth import create_key

    settings = _settings(args)
    credits = None
    if args.credits is not None:
        try:
            credits = Decimal(args.credits)
        except InvalidOperation:
            print(f"raven: --credits must be a decimal number, got {args.credits!r}", file=sys.stderr)
            return 2
        if credits < 0 or not credits.is_finite():
            print("raven: --credits must be >= 0", file=sys.stderr)
            return 2
    for flag in ("rpm", "concurrency"):
        if getattr(args, flag) is not None and getattr(args, flag) < 0:
            print(f"raven: --{flag} must be >= 0", file=sys.stderr)
            return 2
    store = _store(settings)
    await store.open()
    try:
        key, secret = await create_key(
            store, name=args.name,
            rpm=settings.default_rpm if args.rpm is None else args.rpm,
            concurrency=settings.default_concurrency if args.concurrency is None else args.concurrency,
            credits=credits, admin=args.admin,
        )
    finally:
        await store.close()
    print(secret)
    print(f"created key {key.id} ({key.name}); the secret above is shown only once", file=sys.stderr)
    return 0


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


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="TOML config file (or RAVEN_CONFIG)")
    common.add_argument("--data-dir", help="state directory for the embedded SQLite store (or RAVEN_DATA_DIR)")
    p = argparse.ArgumentParser(prog="raven", description="Raven: an OpenAI-compatible LLM API router")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", parents=[common], help="run the gRPC service and the REST gateway")
    s.add_argument("--host")
    s.add_argument("--http-port", type=int)
    s.add_argument("--grpc-port", type=int)
    s.add_argument("--check-config", action="store_true", help="validate the config and exit")
    s.add_argument("--workers", type=int, default=1,
                   help="processes sharing the ports (SO_REUSEPORT); > 1 needs PostgreSQL and Redis")
    s.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    s.set_defaults(func=_serve)

    k = sub.add_parser("keys", help="manage API keys").add_subparsers(dest="keys_command", required=True)
    kc = k.add_parser("create", parents=[common], help="create a key and print its secret once")
    kc.add_argument("--name", required=True)
    kc.add_argument("--rpm", type=int, help="requests per minute (0 = unlimited)")
    kc.add_argument("--concurrency", type=int, help="requests in flight (0 = unlimited)")
    kc.add_argument("--credits", help="credit limit, a decimal in catalogue price units (default unlimited)")
    kc.add_argument("--admin", action="store_true", help="may administer keys")
    kc.set_defaults(func=_keys_create)
    kl = k.add_parser("list", parents=[common], help="list keys")
    kl.set_defaults(func=_keys_list)
    kr = k.add_parser("revoke", parents=[common], help="revoke a key")
    kr.add_argument("id")
    kr.set_defaults(func=_keys_revoke)

    d = sub.add_parser("db", help="database schema").add_subparsers(dest="db_command", required=True)
    du = d.add_parser("upgrade", parents=[common], help="apply schema migrations")
    du.set_defaults(func=_db_upgrade)

    u = sub.add_parser("usage", help="usage records").add_subparsers(dest="usage_command", required=True)
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
        print(f"raven: configuration error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
