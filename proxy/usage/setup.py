"""Building the usage recorder and budget gate for the application's lifespan."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from proxy.context.guard import StoreGuard
from proxy.context.history import HistoryStore
from proxy.context.redis_store import RedisHistoryStore
from proxy.db.write_behind import QueueConfig
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
    queues: QueueConfig,
    guard: StoreGuard | None = None,
) -> UsageRecorder:
    writer = UsageWriter.from_config(sessions, queues)
    # The app's guard, so that its configuration faults are counted and reported too.
    guard = guard or StoreGuard(settings.redis_timeout_ms / 1000)
    budgets = BudgetGate(budget_counters(history), settings.app_budgets, guard)
    return UsageRecorder(writer, PriceTable(settings.prices), budgets)
