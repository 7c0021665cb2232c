"""`railgate` command line: serve, config validate, and the admin commands. Thin by design.

`tenants`, `keys`, `policy` and `usage` are clients of the admin API (`cli_admin.py`).
One exception keeps offline set-ups working: `keys create --config PATH` writes the key
straight into the store that config names, with no running gateway and no admin key.

The admin commands import nothing of the service, so the imports of config, store and
app stay inside the functions of the local commands.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from types import FrameType
from typing import TYPE_CHECKING

from gateway import cli_admin

if TYPE_CHECKING:
    from gateway.config import ConfigError, Settings
    from gateway.store import Store

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="railgate", description="LLM guardrails gateway")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="start the gateway")
    serve.add_argument("--config", help="config file (default: $RAILGATE_CONFIG or bundled)")
    serve.add_argument("--host", help="bind address (default from config: 127.0.0.1)")
    serve.add_argument("--port", type=int, help="TCP port (default from config: 8080)")
    serve.add_argument("--workers", type=int, help="worker processes (default from config: 1)")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])

    config = commands.add_parser("config", help="configuration tools")
    config_cmds = config.add_subparsers(dest="config_command", required=True)
    validate = config_cmds.add_parser("validate", help="check a config file and exit")
    validate.add_argument("--config", help="config file (default: $RAILGATE_CONFIG or bundled)")

    admin = cli_admin.add_commands(commands)
    admin["keys create"].add_argument(
        "--config",
        metavar="PATH",
        help="write the key straight into the store of this config file, without the "
        "admin API (no running gateway, no admin key)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command in cli_admin.COMMANDS and getattr(args, "config", None) is None:
        return cli_admin.run(args)
    if args.command == "keys" and (args.url or args.admin_key):
        print(
            "railgate: --config writes to the store directly; --url and --admin-key are for "
            "the admin API: give one or the other",
            file=sys.stderr,
        )
        return 2
    from gateway.config import ConfigError, load_settings

    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        return _invalid(exc)
    if args.command == "config":
        try:
            _build_policies(settings)
        except ConfigError as exc:
            return _invalid(exc)
        print(
            f"ok: {settings.source} ({len(settings.models)} models, {len(settings.tenants)} tenants)"
        )
        return 0
    if args.command == "keys":
        expires_at = None if args.expires_in is None else time.time() + args.expires_in
        return asyncio.run(
            _create_key(settings, args.tenant, args.name, args.create_tenant, expires_at)
        )
    return _serve(settings, args)


async def _create_key(
    settings: Settings,
    tenant_id: str,
    name: str,
    create_tenant: bool,
    expires_at: float | None,
) -> int:
    from gateway.keys import new_key
    from gateway.store import MemoryStore, Tenant, open_store

    store = open_store(settings.store)
    try:
        known = any(t.id == tenant_id for t in settings.tenants) or (
            await store.get_tenant(tenant_id) is not None
        )
        if not known:
            if not create_tenant:
                print(
                    f"railgate: unknown tenant {tenant_id!r} (use --create-tenant)", file=sys.stderr
                )
                return 1
            await store.put_tenant(Tenant(id=tenant_id, name=tenant_id, created_at=time.time()))
        secret, record = new_key(tenant_id, name=name, expires_at=expires_at)
        await store.put_key(record)
    finally:
        await store.close()
    if isinstance(store, MemoryStore):
        print(
            "note: the store is memory://, so this key lives only in this command's process.\n"
            "Keep it in the config file instead, under the tenant's keys:\n"
            f"  - {{name: {name or 'cli'}, key_sha256: {record.key_sha256}}}",
            file=sys.stderr,
        )
    print(f"key id: {record.id}")
    print(secret)
    return 0


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from gateway.app import asgi_app, create_app
    from gateway.asgi import LOG_LEVEL_ENV
    from gateway.bootstrap import ensure_demo_tenant
    from gateway.config import ConfigError
    from gateway.store import MemoryStore, open_store
    from gateway.telemetry.logs import configure_logging
    from gateway.telemetry.sentry import init_sentry

    server = settings.server
    overrides = {k: v for k in ("host", "port", "workers") if (v := getattr(args, k)) is not None}
    if overrides:
        try:
            settings = _with_server(settings, overrides)
        except ConfigError as exc:
            print(f"railgate: invalid option {exc.path}: {exc.reason}", file=sys.stderr)
            return 2
    server = settings.server
    configure_logging(args.log_level, settings.telemetry.log_format)
    init_sentry(os.environ)
    _exit_on_stop_signals()
    store: Store = open_store(settings.store)
    demo = asyncio.run(_bootstrap(settings, store, ensure_demo_tenant))
    if demo:
        print(
            "railgate: no tenants yet, created tenant 'demo'. Its key (shown once):\n"
            f"  {demo}\n"
            f"  try: curl http://{server.host}:{server.port}/v1/chat/completions "
            f'-H "Authorization: Bearer {demo}" -H "Content-Type: application/json" '
            """-d '{"model":"mock-1","messages":[{"role":"user","content":"Hello"}]}'""",
            flush=True,
        )
    common = {
        "host": server.host,
        "port": server.port,
        "loop": "uvloop",
        "http": "httptools",
        "lifespan": "on",
        "log_level": args.log_level,
        "log_config": None,  # uvicorn's loggers propagate to `configure_logging`'s handler
        "access_log": False,
        "server_header": False,
    }
    if server.workers == 1:
        # A memory store must be the very object the demo key went into; a Redis
        # client was bound to the bootstrap's event loop, so the app opens its own.
        if not isinstance(store, MemoryStore):
            store = open_store(settings.store)
        try:
            app = asgi_app(create_app(settings, store=store, warm_rails=True))
        except ConfigError as exc:
            return _invalid(exc)
        uvicorn.Server(uvicorn.Config(app, **common)).run()
        return 0
    try:
        _build_policies(settings)  # fail here, once, rather than in every worker
    except ConfigError as exc:
        return _invalid(exc)
    os.environ["RAILGATE_CONFIG"] = settings.source
    os.environ[LOG_LEVEL_ENV] = args.log_level
    uvicorn.run("gateway.asgi:app", factory=True, workers=server.workers, **common)
    return 0


def _exit_on_stop_signals() -> None:
    """Exit on SIGTERM or SIGINT through `SystemExit`, so `atexit` handlers run (the log
    writer's, Sentry's). uvicorn restores these handlers after its graceful shutdown and
    raises the signal again; the default action would drop the queued log lines."""

    def stop(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)


def _invalid(exc: ConfigError) -> int:
    print(f"railgate: invalid configuration at {exc.path}: {exc.reason}", file=sys.stderr)
    return 2


def _build_policies(settings: Settings) -> None:
    """Build every configured rails pipeline (engines included); raise `ConfigError`."""
    from gateway.policies import TenantPolicies, guard_registry
    from gateway.providers.registry import ModelRouter, build_providers

    registry = guard_registry(settings, ModelRouter(settings, build_providers(settings)))
    try:
        TenantPolicies(settings, registry)
    finally:
        registry.close()


async def _bootstrap(
    settings: Settings,
    store: Store,
    ensure: Callable[[Settings, Store], Awaitable[str | None]],
) -> str | None:
    from gateway.store import MemoryStore

    try:
        return await ensure(settings, store)
    finally:
        if not isinstance(store, MemoryStore):
            await store.close()


def _with_server(settings: Settings, overrides: dict[str, object]) -> Settings:
    import msgspec

    from gateway.config import parse_settings

    raw = msgspec.to_builtins(settings)
    raw["server"].update(overrides)
    return parse_settings(raw)
