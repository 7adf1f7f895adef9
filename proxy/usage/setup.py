"""Building the usage recorder and budget gate for the application's lifespan."""

from __future__ import annotations

import asyncio

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from proxy.context.guard import StoreGuard
from proxy.context.history import HistoryStore
from proxy.context.redis_store import RedisHistoryStore
from proxy.db.spool import Spool
from proxy.settings import Settings
from proxy.usage.budgets import BudgetCounters, BudgetGate, MemoryCounters, RedisCounters
from proxy.usage.prices import PriceTable
from proxy.usage.recorder import UsageRecorder
from proxy.usage.records import UsageWriter


def budget_counters(history: HistoryStore) -> BudgetCounters:
    """In the same Redis as the history (shared by the replicas), else in process."""
    if isinstance(history, RedisHistoryStore):
        return RedisCounters(history._client, history.prefix)
    return MemoryCounters()


def build_usage(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    history: HistoryStore,
    write_lock: asyncio.Lock | None,
    spool: Spool | None = None,
    guard: StoreGuard | None = None,
) -> UsageRecorder:
    writer = UsageWriter(
        sessions,
        queue_size=settings.transcript_queue_size,
        batch_size=settings.transcript_batch_size,
        flush_seconds=settings.transcript_flush_seconds,
        write_lock=write_lock,
        spool=spool,
    )
    # The app's guard, so that its configuration faults are counted and reported too.
    guard = guard or StoreGuard(settings.redis_timeout_ms / 1000)
    budgets = BudgetGate(budget_counters(history), settings.app_budgets, guard)
    return UsageRecorder(writer, PriceTable(settings.prices), budgets)
