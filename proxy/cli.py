"""The ``proxy`` command: serve the proxy and the operator tasks around it."""

from __future__ import annotations

import argparse
import importlib
import ipaddress
import signal
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI

    from proxy.settings import Settings

# Subcommands with their own argument parsers, imported only when used:
# name -> (module, function, help).
Delegated = tuple[str, str, str]
COMMANDS: dict[str, Delegated] = {
    "migrate": ("proxy.db.migrate", "main", "apply database migrations"),
    "keys": ("proxy.cli_admin", "keys_main", "create, list and revoke caller keys"),
    "profiles": ("proxy.cli_admin", "profiles_main", "manage agent profiles"),
    "tasks": ("proxy.cli_admin", "tasks_main", "show a task's durable transcript"),
    "knowledge": ("proxy.cli_knowledge", "knowledge_main", "manage knowledge bases"),
}
# Development tooling (``proxy.dev``, never imported by the serving code): ``proxy dev NAME``.
DEV_TOOLS: dict[str, Delegated] = {
    "mock": ("proxy.dev.mock.upstream", "main", "run the mock OpenAI-compatible upstream"),
    "bench": ("proxy.dev.bench.gateway", "main", "measure added latency and throughput"),
    "bench-relay": ("proxy.dev.bench.bare_relay", "main", "a bare aiohttp relay (bench floor)"),
    "bench-retrieval": ("proxy.dev.bench.retrieval", "main", "measure retrieval latency"),
    "soak": ("proxy.dev.bench.soak", "main", "many simulated voice sessions, history checked"),
    "chaos": ("proxy.dev.chaos.cli", "main", "fault scenarios against real processes"),
    "engine": ("proxy.dev.voice.engine", "main", "drive a conversation as a voice engine does"),
}
# The top-level names they had first (``proxy bench``, ``proxy mock-upstream``, ...).
DEV_ALIASES = {name: name for name in DEV_TOOLS if name != "mock"} | {"mock-upstream": "mock"}
DEV_EPILOG = "dev tools (also at the top level, as before):\n" + "\n".join(
    f"  proxy {alias:<18} = proxy dev {tool}" for alias, tool in DEV_ALIASES.items()
)

LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


def _is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def create_app_from_env() -> FastAPI:
    """uvicorn factory (one per worker process): settings come from the environment."""
    from proxy.app import create_app
    from proxy.heap import freeze_after_startup
    from proxy.logs import configure_logging
    from proxy.serving import HeaderTimeoutProtocol
    from proxy.settings import Settings

    settings = Settings()
    configure_logging(settings.log_level)
    HeaderTimeoutProtocol.header_timeout = settings.header_timeout_seconds
    app = create_app(settings)
    freeze_after_startup(app)
    return app


def load_settings(prog: str, **overrides: Any) -> Settings | None:
    """The settings, or None after printing why they are refused (one line)."""
    from proxy.config_file import describe
    from proxy.settings import Settings

    try:
        return Settings(**overrides)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError too
        print(f"{prog}: invalid configuration: {describe(exc)}", file=sys.stderr)
        return None


def _has_caller_keys(settings: Settings) -> bool:
    """Keys in the environment, the config file or the database (the SQLite file is
    migrated first, as serving would). An unreachable database counts as no keys."""
    if settings.api_keys or settings.keys:
        return True
    from proxy.db.keys_check import database_has_keys

    return database_has_keys(settings)


def serve(args: argparse.Namespace) -> int:
    import os

    import uvicorn

    from proxy.logs import configure_logging
    from proxy.serving import HeaderTimeoutProtocol

    overrides = {
        k: v
        for k, v in (
            ("host", args.host),
            ("port", args.port),
            ("header_timeout_seconds", args.header_timeout),
        )
        if v is not None
    }
    settings = load_settings("proxy", **overrides)
    if settings is None:
        return 2
    configure_logging(settings.log_level)
    if (
        not _is_loopback(settings.host)
        and not settings.allow_unauthenticated_public
        and not _has_caller_keys(settings)
    ):
        print(
            f"proxy: refusing to listen on {settings.host} without caller keys. Create one "
            "with `proxy keys create NAME` or set PROXY_API_KEYS; or set "
            "PROXY_ALLOW_UNAUTHENTICATED_PUBLIC=true if that is intended.",
            file=sys.stderr,
        )
        return 2
    # uvicorn re-raises SIGTERM after its graceful shutdown; a finished shutdown is a
    # success, so that re-raise exits 0 (what orchestrators expect).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    # Worker processes rebuild settings from the environment: pass the overrides on.
    os.environ["PROXY_HOST"], os.environ["PROXY_PORT"] = settings.host, str(settings.port)
    os.environ["PROXY_HEADER_TIMEOUT_SECONDS"] = str(settings.header_timeout_seconds)
    HeaderTimeoutProtocol.header_timeout = settings.header_timeout_seconds
    uvicorn.run(
        "proxy.cli:create_app_from_env",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=args.workers,
        loop="uvloop",
        http=HeaderTimeoutProtocol,  # httptools, with a deadline for request headers
        log_config=None,
        access_log=False,
        proxy_headers=False,  # client addresses are not used; skip the per-request rewrite
        timeout_graceful_shutdown=args.graceful_timeout,
        timeout_keep_alive=settings.keep_alive_seconds,
    )
    return 0


def _delegate(command: Delegated, argv: list[str]) -> int:
    module_name, function, _ = command
    module = importlib.import_module(module_name)
    return int(getattr(module, function)(argv))


def dev_main(argv: list[str]) -> int:
    """``proxy dev NAME ...``: the development tooling, one subcommand each."""
    if argv and argv[0] in DEV_TOOLS:
        return _delegate(DEV_TOOLS[argv[0]], argv[1:])
    parser = argparse.ArgumentParser(
        prog="proxy dev", description="Development tooling: not part of the serving proxy."
    )
    tools = parser.add_subparsers(dest="tool", required=True)
    for name, (_, _, help_text) in DEV_TOOLS.items():
        tools.add_parser(name, help=help_text, add_help=False)
    parser.parse_args(argv)  # only help or an error reach here: both exit
    return 2


def main(argv: list[str] | None = None) -> int:
    from proxy import __version__

    parser = argparse.ArgumentParser(
        prog="proxy",
        description=__doc__,
        epilog=DEV_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"proxy {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve_cmd = commands.add_parser("serve", help="run the proxy")
    serve_cmd.add_argument("--host", default=None, help="default 127.0.0.1 (PROXY_HOST)")
    serve_cmd.add_argument("--port", type=int, default=None, help="default 8000 (PROXY_PORT)")
    serve_cmd.add_argument("--workers", type=int, default=1)
    serve_cmd.add_argument(
        "--graceful-timeout", type=float, default=30.0, help="seconds in-flight streams may finish"
    )
    serve_cmd.add_argument(
        "--header-timeout",
        type=float,
        default=None,
        help="seconds a connection has to send its request headers, else it is closed "
        "(slowloris); default 10 (PROXY_HEADER_TIMEOUT_SECONDS)",
    )

    for name, (_, _, help_text) in COMMANDS.items():
        commands.add_parser(name, help=help_text, add_help=False)
    commands.add_parser("dev", help="development tooling (proxy dev --help)", add_help=False)

    raw = sys.argv[1:] if argv is None else argv
    if raw and raw[0] == "dev":
        return dev_main(raw[1:])
    if raw and raw[0] in COMMANDS:
        return _delegate(COMMANDS[raw[0]], raw[1:])
    if raw and raw[0] in DEV_ALIASES:  # the names the README and the issues use
        return _delegate(DEV_TOOLS[DEV_ALIASES[raw[0]]], raw[1:])
    args = parser.parse_args(raw)
    if args.command == "serve":
        return serve(args)
    parser.error(f"unknown command {args.command}")
    return 2
