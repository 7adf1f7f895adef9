"""The services one proxy process runs, in one typed container.

``start_services(settings, metrics, tracing)`` builds and starts every client and
worker in dependency order; ``stop_services`` stops them in reverse. The application
keeps the container as ``app.state.services``; handlers read it with
``services(request)``, typed, instead of reaching into ``app.state`` by name.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import logging
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from starlette.requests import HTTPConnection

from proxy.access.catalog import Catalog
from proxy.access.limits import ConcurrencyGate, RateLimiter
from proxy.chat.inflight import InFlight
from proxy.chat.service import ChatService
from proxy.chat.turns import TurnWriter
from proxy.context.budget import TokenCounter
from proxy.context.guard import StoreGuard
from proxy.context.history import HistoryStore
from proxy.context.memory_store import MemoryHistoryStore
from proxy.context.redis_client import connect_redis
from proxy.context.redis_lane import script_lane
from proxy.context.redis_store import RedisHistoryStore
from proxy.context.summary import Summariser
from proxy.db.session import async_url, make_engine, make_sessionmaker
from proxy.db.spool import Spool, SpoolError, spool_directory
from proxy.db.transcript import TranscriptWriter
from proxy.db.write_behind import QueueConfig
from proxy.knowledge.ingest import IngestService
from proxy.knowledge.retrieval import Retriever
from proxy.knowledge.service import build_knowledge
from proxy.metrics import ProxyMetrics
from proxy.observability.tracing import Tracing
from proxy.observability.turnlog import TurnLogWriter
from proxy.settings import ECHO_MODEL, Settings
from proxy.tools.registry import ToolRegistry
from proxy.tools.runner import ToolRunner
from proxy.upstream.client import UpstreamClient
from proxy.upstream.routes import RouteTable, UpstreamRouter
from proxy.usage.budgets import BudgetGate
from proxy.usage.recorder import UsageRecorder
from proxy.usage.setup import build_usage
from proxy.voice.callbacks import CallbackService
from proxy.voice.spoken import SpokenTextReconciler

log = logging.getLogger("proxy")


@dataclass(slots=True)
class Services:
    settings: Settings
    metrics: ProxyMetrics
    tracing: Tracing
    client: UpstreamClient
    routes: RouteTable
    router: UpstreamRouter
    history: HistoryStore
    db_engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    catalog: Catalog
    retriever: Retriever
    knowledge: IngestService
    tools: ToolRegistry
    tool_runner: ToolRunner
    spool: Spool | None
    transcripts: TranscriptWriter
    store_guard: StoreGuard
    usage: UsageRecorder
    budgets: BudgetGate
    turn_logs: TurnLogWriter
    summariser: Summariser
    spoken: SpokenTextReconciler  # what the caller heard (905, Retell's transcript)
    chat: ChatService
    rate_limiter: RateLimiter
    concurrency: ConcurrencyGate
    callbacks: CallbackService
    shutting_down: bool = False


def services(connection: HTTPConnection) -> Services:
    """The running application's services (a request's or a WebSocket's)."""
    found: Services = connection.app.state.services
    return found


async def build_history_store(settings: Settings) -> HistoryStore:
    if not settings.redis_url and not settings.redis_sentinels:
        return MemoryHistoryStore(ttl_seconds=settings.history_ttl_seconds)
    client = await connect_redis(settings)
    store = RedisHistoryStore(
        client,
        prefix=settings.redis_prefix,
        ttl_seconds=settings.history_ttl_seconds,
        lane=script_lane(client),  # the turns' scripts skip redis-py's call path
    )
    try:
        await asyncio.wait_for(store.load_scripts(), timeout=2.0)
    except Exception as exc:  # Redis down on start: the turns load them on first use
        log.warning("could not load the Redis scripts on start: %r", exc)
    return store


async def start_services(settings: Settings, metrics: ProxyMetrics, tracing: Tracing) -> Services:
    """Build and start every service, in dependency order."""
    client = UpstreamClient(max_connections=settings.upstream_max_connections)
    await client.start()
    table = RouteTable(settings)
    metrics.models.allow(_configured_models(settings), lambda: table.aliases)
    router = UpstreamRouter(client, table, metrics)
    history = await build_history_store(settings)
    if isinstance(history, RedisHistoryStore):  # replicas share which targets are down
        router.cooldowns.share_through(history._client, settings.redis_prefix)
    await _prepare_database(settings)
    db_engine = make_engine(settings.database_url)
    sessions = make_sessionmaker(db_engine)
    catalog = Catalog(settings, sessions, table)
    await catalog.start()
    retriever, knowledge = build_knowledge(settings, sessions, TokenCounter())
    await retriever.load(sessions)
    retriever.start_polling(sessions, settings.key_cache_seconds)
    tools = ToolRegistry(sessions, refresh_seconds=settings.key_cache_seconds)
    await tools.start()
    tool_runner = ToolRunner()
    await tool_runner.start()
    # One SQLite file has one write lock: the write-behind queues take turns with it.
    write_lock = asyncio.Lock() if db_engine.dialect.name == "sqlite" else None
    spool = _open_spool(settings)
    queues = QueueConfig(
        queue_size=settings.transcript_queue_size,
        batch_size=settings.transcript_batch_size,
        flush_seconds=settings.transcript_flush_seconds,
        write_lock=write_lock,
        spool=spool,
    )
    transcripts = TranscriptWriter.from_config(sessions, queues)
    await transcripts.start()
    guard = StoreGuard(settings.redis_timeout_ms / 1000)
    usage = build_usage(settings, sessions, history, queues, guard=guard)
    await usage.writer.start()
    turn_logs = TurnLogWriter.from_config(sessions, queues)
    await turn_logs.start()
    summariser = Summariser(history, router, settings.history)
    spoken = SpokenTextReconciler(history, transcripts, grace_seconds=settings.spoken_grace_seconds)
    counter = TokenCounter()
    counter.load()  # 0.2 s of tokenizer set-up: now, not stalling every stream on a first turn
    writer = TurnWriter(
        history,
        counter,
        guard,
        metrics,
        InFlight.for_replica(history, guard, metrics, lease_seconds=settings.lease_seconds),
        transcripts=transcripts,
        spoken=spoken,
        summariser=summariser,
    )
    chat = ChatService(
        settings,
        router,
        history,
        counter,
        writer,
        guard,
        metrics,
        tools=tools,
        tool_runner=tool_runner,
        retriever=retriever,
    )
    callbacks = CallbackService(
        history,
        sessions,
        spoken,
        closed_ttl_seconds=settings.history_closed_ttl_seconds,
        timeout_seconds=settings.redis_timeout_ms / 1000,
        metrics=metrics,
        write_lock=write_lock,
        spool=spool,
    )
    await callbacks.start()
    return Services(
        settings=settings,
        metrics=metrics,
        tracing=tracing,
        client=client,
        routes=table,
        router=router,
        history=history,
        db_engine=db_engine,
        sessions=sessions,
        catalog=catalog,
        retriever=retriever,
        knowledge=knowledge,
        tools=tools,
        tool_runner=tool_runner,
        spool=spool,
        transcripts=transcripts,
        store_guard=guard,
        usage=usage,
        budgets=usage.budgets,
        turn_logs=turn_logs,
        summariser=summariser,
        spoken=spoken,
        chat=chat,
        rate_limiter=RateLimiter(history, guard),
        concurrency=ConcurrencyGate(settings.max_concurrent_requests),
        callbacks=callbacks,
    )


SHUTDOWN_STALL_SECONDS = 30.0  # a shutdown still running then logs every thread's stack
CLOSE_STEP_SECONDS = 5.0  # the longest one client's close may take


async def stop_services(s: Services) -> None:
    """Graceful shutdown: turns in flight finish, queues drain (each bounded in time),
    then clients close, each within ``CLOSE_STEP_SECONDS``: a replica told to stop
    always stops. One that stalls anyway leaves every thread's stack in its log."""
    s.shutting_down = True
    with contextlib.suppress(OSError, ValueError):  # a stderr with no file descriptor
        faulthandler.dump_traceback_later(SHUTDOWN_STALL_SECONDS, exit=False)
    try:
        await s.chat.drain()
        await s.callbacks.drain()
        await s.spoken.close()
        await s.summariser.close()
        await s.transcripts.close()
        await s.budgets.drain()
        await s.usage.writer.close()
        await s.turn_logs.close()
        for name, closing in (
            ("catalog", s.catalog.close),
            ("tools", s.tools.close),
            ("retriever", s.retriever.close),
            ("tool runner", s.tool_runner.close),
            ("cooldowns", s.router.cooldowns.close),
            ("upstream client", s.client.close),
            ("history store", s.history.close),
            ("database engine", s.db_engine.dispose),
        ):
            try:
                await asyncio.wait_for(closing(), CLOSE_STEP_SECONDS)
            except Exception as exc:  # a timeout included: the next ones still close
                log.error("shutdown: closing the %s failed: %r", name, exc)
        s.tracing.close()
        if s.spool is not None:
            s.spool.close()
    finally:
        faulthandler.cancel_dump_traceback_later()


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
