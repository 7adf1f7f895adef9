"""The application factory: ``create_app(settings)``; the lifespan builds every client."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from proxy import __version__
from proxy.access.catalog import Catalog
from proxy.api import admin, chat, health
from proxy.api.errors import install_error_handlers
from proxy.chat.service import ChatService
from proxy.context.budget import TokenCounter
from proxy.context.history import HistoryStore
from proxy.context.memory_store import MemoryHistoryStore
from proxy.context.redis_store import RedisHistoryStore
from proxy.context.summary import Summariser
from proxy.db.session import make_engine, make_sessionmaker
from proxy.settings import Settings
from proxy.upstream.client import UpstreamClient
from proxy.upstream.routes import RouteTable, UpstreamRouter

log = logging.getLogger("proxy")


def build_history_store(settings: Settings) -> HistoryStore:
    if not settings.redis_url:
        return MemoryHistoryStore(ttl_seconds=settings.history_ttl_seconds)
    import redis.asyncio as redis

    timeout = settings.redis_timeout_ms / 1000
    client = redis.Redis.from_url(
        settings.redis_url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry_on_timeout=False,
        health_check_interval=30,
    )
    return RedisHistoryStore(
        client, prefix=settings.redis_prefix, ttl_seconds=settings.history_ttl_seconds
    )


def _announce(settings: Settings, table: RouteTable) -> None:
    if not table.has_upstream:
        log.warning(
            "no upstream configured: every model is answered by the built-in 'echo' model. "
            "Set PROXY_UPSTREAM_BASE_URL and PROXY_UPSTREAM_API_KEY (any OpenAI-compatible "
            "API), or routes in a YAML file named by PROXY_CONFIG, to use a real model."
        )
    if not settings.auth_required:
        log.warning(
            "no caller keys configured (PROXY_API_KEYS): anyone who can reach this port can "
            "use it. Listening on loopback only unless PROXY_ALLOW_UNAUTHENTICATED_PUBLIC=true."
        )
    if not settings.redis_url:
        log.warning(
            "no PROXY_REDIS_URL: task history is kept in this process only "
            "(lost on restart, not shared between replicas)"
        )


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client = UpstreamClient(max_connections=settings.upstream_max_connections)
        await client.start()
        table = RouteTable(settings)
        history = build_history_store(settings)
        app.state.router = UpstreamRouter(client, table)
        app.state.history = history
        summariser = Summariser(history, table, settings.history)
        app.state.chat = ChatService(
            settings, app.state.router, history, TokenCounter(), summariser
        )
        app.state.db_engine = make_engine(settings.database_url)
        app.state.sessions = make_sessionmaker(app.state.db_engine)
        app.state.catalog = Catalog(settings, app.state.sessions, table)
        await app.state.catalog.start()
        app.state.shutting_down = False
        _announce(settings, table)
        try:
            yield
        finally:
            app.state.shutting_down = True
            await app.state.chat.drain()
            await summariser.close()
            await app.state.catalog.close()
            await client.close()
            await history.close()
            await app.state.db_engine.dispose()

    app = FastAPI(
        title="Voice LLM proxy",
        version=__version__,
        description="OpenAI-compatible LLM proxy with per-task context for voice agents.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    install_error_handlers(app)
    app.include_router(chat.router)
    app.include_router(health.router)
    app.include_router(admin.router)
    return app
