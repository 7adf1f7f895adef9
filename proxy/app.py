"""The application factory: ``create_app(settings)``; the lifespan builds every client."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

from fastapi import FastAPI

from proxy import __version__
from proxy.access.catalog import Catalog
from proxy.access.limits import ConcurrencyGate, RateLimiter
from proxy.api import admin, callbacks, chat, health, responses, retell
from proxy.api.docs import install_docs
from proxy.api.errors import install_error_handlers
from proxy.chat.service import ChatService
from proxy.chat.turns import TurnWriter
from proxy.console.install import install_console
from proxy.context.budget import TokenCounter
from proxy.context.guard import StoreGuard
from proxy.context.history import HistoryStore
from proxy.context.memory_store import MemoryHistoryStore
from proxy.context.redis_client import connect_redis
from proxy.context.redis_faults import FAULTS
from proxy.context.redis_store import RedisHistoryStore
from proxy.context.summary import Summariser
from proxy.db.session import async_url, make_engine, make_sessionmaker
from proxy.db.spool import Spool, SpoolError, spool_directory
from proxy.db.transcript import TranscriptWriter
from proxy.knowledge.service import build_knowledge
from proxy.metrics import ProxyMetrics
from proxy.observability.access import AccessMiddleware
from proxy.observability.tracing import Tracing, traces_endpoint
from proxy.observability.turnlog import TurnLogWriter
from proxy.settings import ECHO_MODEL, Settings
from proxy.tools.registry import ToolRegistry
from proxy.tools.runner import ToolRunner
from proxy.upstream.client import UpstreamClient
from proxy.upstream.routes import RouteTable, UpstreamRouter
from proxy.usage.setup import build_usage
from proxy.voice.callbacks import CallbackService
from proxy.voice.spoken import SpokenTextReconciler

log = logging.getLogger("proxy")


async def build_history_store(settings: Settings) -> HistoryStore:
    if not settings.redis_url and not settings.redis_sentinels:
        return MemoryHistoryStore(ttl_seconds=settings.history_ttl_seconds)
    client = await connect_redis(settings)
    store = RedisHistoryStore(
        client, prefix=settings.redis_prefix, ttl_seconds=settings.history_ttl_seconds
    )
    try:
        await asyncio.wait_for(store.load_scripts(), timeout=2.0)
    except Exception as exc:  # Redis down on start: the turns load them on first use
        log.warning("could not load the Redis scripts on start: %r", exc)
    return store


async def _prepare_database(settings: Settings) -> None:
    """The embedded SQLite file migrates itself; other databases use ``proxy migrate``."""
    url = async_url(settings.database_url)
    if not url.startswith("sqlite"):
        return
    from proxy.db.migrate import upgrade

    try:
        await asyncio.to_thread(upgrade, url)
    except Exception as exc:  # the proxy still serves chat without its database
        log.error("could not migrate the SQLite database %s: %r", url, exc)


def _configured_models(settings: Settings) -> set[str]:
    """Model names that are metric labels of their own: routes, their targets' models,
    the default upstream's model, ``PROXY_METRICS_MODELS`` and echo (the rest: other)."""
    names = {ECHO_MODEL, *settings.metrics_models, *settings.routes}
    for route in settings.routes.values():
        names.update(t.model for t in route.targets if t.model)
    default = settings.default_target()
    if default is not None and default.model:
        names.add(default.model)
    return names


def _open_spool(settings: Settings) -> Spool | None:
    """The durable spool of the write-behind queues (see ``proxy.db.spool``)."""
    directory = spool_directory(settings.spool_dir, async_url(settings.database_url))
    if directory is None:
        log.warning(
            "PROXY_SPOOL_DIR=off: transcripts and callback events the database has not "
            "taken yet are kept in memory only (lost if the process stops)"
        )
        return None
    try:
        return Spool(directory, fsync=settings.spool_fsync).open()
    except SpoolError as exc:
        log.error("%s: set PROXY_SPOOL_DIR to a writable directory", exc)
        raise


def _expose_error_counters(state: Any) -> None:
    """Failures the components count themselves, published at scrape time."""
    expose = state.metrics.expose_counter
    errors = "proxy_store_errors"
    doc = "Calls to Redis or the database that failed (the proxy carried on)."
    expose(errors, doc, lambda: state.chat.store_errors, store="redis")
    expose(errors, doc, lambda: state.catalog.refresh_errors, store="database")
    expose(errors, doc, lambda: state.transcripts.failed_writes, store="database")
    expose(errors, doc, lambda: state.callbacks.writer.failed_writes, store="database")
    expose(
        "proxy_store_timeouts",
        "Redis calls past their time box (PROXY_REDIS_TIMEOUT_MS) or refused for want of a "
        "free connection: the store is slow, not down (counted in proxy_store_errors too).",
        lambda: state.store_guard.timeouts,
    )
    expose(
        "proxy_budget_tokens_uncounted",
        "Tokens not added to the daily budget counters: the store call failed.",
        lambda: state.budgets.uncounted_tokens,
    )
    expose(
        "proxy_transcript_dropped",
        "Transcript items dropped: the write queue was full.",
        lambda: state.transcripts.dropped,
    )
    expose(
        "proxy_callback_events_dropped",
        "Callback events not recorded: the write queue was full.",
        lambda: state.callbacks.writer.dropped,
    )
    refused = "proxy_write_behind_refused"
    doc = "Accepted-for-recording submissions not recorded, by queue and reason."
    for queue, writer in (
        ("transcript", state.transcripts),
        ("callback_event", state.callbacks.writer),
        ("usage", state.usage.writer),
        ("turn_log", state.turn_logs),
    ):
        for reason in ("full", "closed", "rejected", "erased"):
            expose(
                refused,
                doc,
                partial(writer.refused.__getitem__, reason),
                queue=queue,
                reason=reason,
            )
    retries = "proxy_turn_commit_retries"
    doc = "Turn commits that timed out or failed, retried in the background, by outcome."
    expose(retries, doc, lambda: state.chat.writer.retries.recorded, outcome="recorded")
    expose(retries, doc, lambda: state.chat.writer.retries.refused, outcome="refused")
    expose(retries, doc, lambda: state.chat.writer.retries.lost, outcome="lost")
    expose(
        "proxy_summary_failures",
        "Background summaries that failed.",
        lambda: state.summariser.failures,
    )
    faults = state.store_guard.faults
    for fault in FAULTS:  # a closed set: every label is there from the start
        expose(
            "proxy_store_config_faults",
            "Redis errors that are configuration faults (MOVED, NOPERM, ...), by error.",
            lambda fault=fault: faults.counts[fault],
            error=fault,
        )


def _announce(settings: Settings, table: RouteTable, catalog: Catalog) -> None:
    if not table.has_upstream:
        log.warning(
            "no upstream configured: every model is answered by the built-in 'echo' model. "
            "Set PROXY_UPSTREAM_BASE_URL and PROXY_UPSTREAM_API_KEY (any OpenAI-compatible "
            "API), or routes in a YAML file named by PROXY_CONFIG, to use a real model."
        )
    if not catalog.auth_required:  # keys from the environment, the config or the database
        log.warning(
            "no caller keys: anyone who can reach this port can use it. Create one with "
            "`proxy keys create NAME` (or set PROXY_API_KEYS); listening on loopback only "
            "unless PROXY_ALLOW_UNAUTHENTICATED_PUBLIC=true."
        )
    if not settings.redis_url and not settings.redis_sentinels:
        log.warning(
            "no PROXY_REDIS_URL: task history is kept in this process only "
            "(lost on restart, not shared between replicas)"
        )


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = app.state
        metrics = state.metrics
        client = UpstreamClient(max_connections=settings.upstream_max_connections)
        await client.start()
        table = RouteTable(settings)
        metrics.models.allow(_configured_models(settings), lambda: table.aliases)
        state.router = UpstreamRouter(client, table, metrics)
        state.history = history = await build_history_store(settings)
        if isinstance(history, RedisHistoryStore):  # replicas share which targets are down
            state.router.cooldowns.share_through(history._client, settings.redis_prefix)
        await _prepare_database(settings)
        state.db_engine = make_engine(settings.database_url)
        state.sessions = make_sessionmaker(state.db_engine)
        state.catalog = Catalog(settings, state.sessions, table)
        await state.catalog.start()
        state.retriever, state.knowledge = build_knowledge(settings, state.sessions, TokenCounter())
        await state.retriever.load(state.sessions)
        state.retriever.start_polling(state.sessions, settings.key_cache_seconds)
        state.tools = ToolRegistry(state.sessions, refresh_seconds=settings.key_cache_seconds)
        await state.tools.start()
        state.tool_runner = ToolRunner()
        await state.tool_runner.start()
        # One SQLite file has one write lock: the write-behind queues take turns with it.
        write_lock = asyncio.Lock() if state.db_engine.dialect.name == "sqlite" else None
        state.spool = _open_spool(settings)
        state.transcripts = TranscriptWriter(
            state.sessions,
            queue_size=settings.transcript_queue_size,
            batch_size=settings.transcript_batch_size,
            flush_seconds=settings.transcript_flush_seconds,
            write_lock=write_lock,
            spool=state.spool,
        )
        await state.transcripts.start()
        state.store_guard = guard = StoreGuard(settings.redis_timeout_ms / 1000)
        state.usage = build_usage(
            settings, state.sessions, history, write_lock, state.spool, guard=guard
        )
        state.budgets = state.usage.budgets
        await state.usage.writer.start()
        state.turn_logs = TurnLogWriter(
            state.sessions,
            queue_size=settings.transcript_queue_size,
            batch_size=settings.transcript_batch_size,
            flush_seconds=settings.transcript_flush_seconds,
            write_lock=write_lock,
            spool=state.spool,
        )
        await state.turn_logs.start()
        summariser = Summariser(history, state.router, settings.history)
        spoken = SpokenTextReconciler(
            history, state.transcripts, grace_seconds=settings.spoken_grace_seconds
        )
        counter = TokenCounter()
        writer = TurnWriter(
            history,
            counter,
            guard,
            metrics,
            transcripts=state.transcripts,
            spoken=spoken,
            summariser=summariser,
        )
        state.chat = ChatService(
            settings,
            state.router,
            history,
            counter,
            writer,
            guard,
            metrics,
            tools=getattr(state, "tools", None),
            tool_runner=getattr(state, "tool_runner", None),
            retriever=state.retriever,
        )
        state.summariser = summariser
        state.spoken = spoken  # what the caller heard (905, Retell's transcript)
        state.rate_limiter = RateLimiter(history, guard)
        state.concurrency = ConcurrencyGate(settings.max_concurrent_requests)
        state.callbacks = CallbackService(
            history,
            state.sessions,
            spoken,
            closed_ttl_seconds=settings.history_closed_ttl_seconds,
            timeout_seconds=settings.redis_timeout_ms / 1000,
            metrics=metrics,
            write_lock=write_lock,
            spool=state.spool,
        )
        await state.callbacks.start()
        _expose_error_counters(state)
        state.shutting_down = False
        _announce(settings, table, state.catalog)
        try:
            yield
        finally:
            state.shutting_down = True
            await state.chat.drain()
            await state.callbacks.drain()
            await spoken.close()
            await summariser.close()
            await state.transcripts.close()
            await state.budgets.drain()
            await state.usage.writer.close()
            await state.turn_logs.close()
            await state.catalog.close()
            await state.tools.close()
            await state.retriever.close()
            await state.tool_runner.close()
            await state.router.cooldowns.close()
            await client.close()
            await history.close()
            await state.db_engine.dispose()
            state.tracing.close()
            if state.spool is not None:
                state.spool.close()

    app = chat.ProxyApp(
        title="Voice LLM proxy",
        version=__version__,
        description="OpenAI-compatible LLM proxy with per-task context for voice agents.",
        lifespan=lifespan,
        docs_url=None,  # served from the package by install_docs (works offline)
        redoc_url=None,  # ReDoc would load from a CDN
    )
    app.state.settings = settings
    app.state.metrics = ProxyMetrics()
    install_error_handlers(app)
    app.state.tracing = Tracing.start(
        traces_endpoint(
            settings.otel_exporter_otlp_endpoint, settings.otel_exporter_otlp_traces_endpoint
        ),
        __version__,
    )
    app.add_middleware(AccessMiddleware, tracing=app.state.tracing, access_log=settings.access_log)
    app.chat_path = AccessMiddleware(
        chat.chat_endpoint, tracing=app.state.tracing, access_log=settings.access_log
    )
    app.include_router(chat.router)
    app.include_router(health.router)
    app.include_router(admin.router)
    app.include_router(callbacks.router)
    app.include_router(responses.router)
    app.include_router(retell.router)
    install_docs(app)
    install_console(app)
    return app
