"""The application factory: ``create_app(settings)``; the lifespan starts the services
(``proxy.services``) and keeps them as ``app.state.services``."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI

from proxy import __version__
from proxy.access.catalog import Catalog
from proxy.api import admin, callbacks, chat, health, responses, retell
from proxy.api.docs import install_docs
from proxy.api.errors import install_error_handlers
from proxy.console.install import install_console
from proxy.context.redis_faults import FAULTS
from proxy.metrics import ProxyMetrics
from proxy.observability.access import AccessMiddleware
from proxy.observability.tracing import Tracing, traces_endpoint
from proxy.services import Services, start_services, stop_services
from proxy.settings import Settings
from proxy.upstream.routes import RouteTable

log = logging.getLogger("proxy")


def _expose_error_counters(running: Services) -> None:
    """Failures the components count themselves, published at scrape time."""
    expose = running.metrics.expose_counter
    errors = "proxy_store_errors"
    doc = "Calls to Redis or the database that failed (the proxy carried on)."
    expose(errors, doc, lambda: running.chat.store_errors, store="redis")
    expose(errors, doc, lambda: running.catalog.refresh_errors, store="database")
    expose(errors, doc, lambda: running.transcripts.failed_writes, store="database")
    expose(errors, doc, lambda: running.callbacks.writer.failed_writes, store="database")
    expose(
        "proxy_store_timeouts",
        "Redis calls past their time box (PROXY_REDIS_TIMEOUT_MS) or refused for want of a "
        "free connection: the store is slow, not down (counted in proxy_store_errors too).",
        lambda: running.store_guard.timeouts,
    )
    expose(
        "proxy_budget_tokens_uncounted",
        "Tokens not added to the daily budget counters: the store call failed.",
        lambda: running.budgets.uncounted_tokens,
    )
    expose(
        "proxy_transcript_dropped",
        "Transcript items dropped: the write queue was full.",
        lambda: running.transcripts.dropped,
    )
    expose(
        "proxy_callback_events_dropped",
        "Callback events not recorded: the write queue was full.",
        lambda: running.callbacks.writer.dropped,
    )
    refused = "proxy_write_behind_refused"
    doc = "Accepted-for-recording submissions not recorded, by queue and reason."
    for queue, writer in (
        ("transcript", running.transcripts),
        ("callback_event", running.callbacks.writer),
        ("usage", running.usage.writer),
        ("turn_log", running.turn_logs),
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
    expose(retries, doc, lambda: running.chat.writer.retries.recorded, outcome="recorded")
    expose(retries, doc, lambda: running.chat.writer.retries.refused, outcome="refused")
    expose(retries, doc, lambda: running.chat.writer.retries.lost, outcome="lost")
    expose(
        "proxy_summary_failures",
        "Background summaries that failed.",
        lambda: running.summariser.failures,
    )
    faults = running.store_guard.faults
    for fault in FAULTS:  # a closed set: every label is there from the start
        expose(
            "proxy_store_config_faults",
            "Redis errors that are configuration faults (MOVED, NOPERM, ...), by error.",
            partial(faults.counts.__getitem__, fault),
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
    metrics = ProxyMetrics()
    tracing = Tracing.start(
        traces_endpoint(
            settings.otel_exporter_otlp_endpoint, settings.otel_exporter_otlp_traces_endpoint
        ),
        __version__,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        running = await start_services(settings, metrics, tracing)
        app.state.services = running
        _expose_error_counters(running)
        _announce(settings, running.routes, running.catalog)
        try:
            yield
        finally:
            await stop_services(running)

    app = chat.ProxyApp(
        title="Voice LLM proxy",
        version=__version__,
        description="OpenAI-compatible LLM proxy with per-task context for voice agents.",
        lifespan=lifespan,
        docs_url=None,  # served from the package by install_docs (works offline)
        redoc_url=None,  # ReDoc would load from a CDN
    )
    install_error_handlers(app)
    app.add_middleware(AccessMiddleware, tracing=tracing, access_log=settings.access_log)
    app.chat_path = AccessMiddleware(
        chat.chat_endpoint, tracing=tracing, access_log=settings.access_log
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
