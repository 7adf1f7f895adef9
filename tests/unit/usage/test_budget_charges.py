"""A charge the budget counters missed: counted (proxy_budget_tokens_uncounted_total), and
logged as a warning when the store was only slow, an error when it refused."""

from __future__ import annotations

import asyncio
import logging

import pytest
from redis import exceptions as redis_errors

from proxy.context.guard import StoreGuard
from proxy.usage.budgets import BudgetGate, Spend


class FailingCounters:
    def __init__(self, error: Exception) -> None:
        self.error = error

    async def add(self, names: list[str], tokens: int, micros: int) -> None:
        raise self.error

    async def read(self, names: list[str]) -> list[Spend]:
        return [Spend() for _ in names]


@pytest.mark.parametrize(
    ("error", "level"),
    [
        (TimeoutError(), logging.WARNING),
        (redis_errors.ConnectionError("refused"), logging.ERROR),
    ],
)
async def test_uncounted_tokens_are_counted_and_levelled(
    error: Exception, level: int, caplog: pytest.LogCaptureFixture
) -> None:
    gate = BudgetGate(FailingCounters(error), {}, StoreGuard(1.0))
    with caplog.at_level(logging.WARNING, logger="proxy.usage.budgets"):
        gate.charge("key-1", "app-1", 120, 0.0)
        gate.charge("key-1", None, 30, 0.0)
        await gate.drain()
        await asyncio.sleep(0)
    assert gate.uncounted_tokens == 150
    records = [r for r in caplog.records if "budget counters not updated" in r.getMessage()]
    assert [r.levelno for r in records] == [level, level]
