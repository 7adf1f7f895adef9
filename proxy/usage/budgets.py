"""Daily token and cost budgets per key and per app, shared by every replica.

Each completion's tokens and cost are added to per-day counters (in Redis when the proxy
has one, so every replica sees every other's spend; in process otherwise). A turn is
refused with 429 ``budget_exceeded`` once a counter has reached its cap: the turn that
crosses a cap still completes (its size is only known at the end), the next one is
refused. Counters expire two days after their day.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from proxy.access.catalog import Caller
from proxy.context.guard import FAILED, StoreGuard, slow
from proxy.errors import ProxyError
from proxy.usage.specs import Budget

log = logging.getLogger(__name__)

COUNTER_TTL_SECONDS = 2 * 86_400
MICROS = 1_000_000  # cost is counted in millionths, so that counters stay integers
MAX_MEMORY_COUNTERS = 100_000


class BudgetExceeded(ProxyError):
    status = 429
    error_type = "insufficient_quota"
    code = "budget_exceeded"


@dataclass(frozen=True, slots=True)
class Spend:
    tokens: int = 0
    cost: float = 0.0


class BudgetCounters(Protocol):
    async def add(self, names: list[str], tokens: int, micros: int) -> None: ...

    async def read(self, names: list[str]) -> list[Spend]: ...


class MemoryCounters:
    """One process's counters (no Redis configured): bounded, today's first."""

    def __init__(self) -> None:
        self._counts: dict[str, tuple[int, int]] = {}

    async def add(self, names: list[str], tokens: int, micros: int) -> None:
        if len(self._counts) > MAX_MEMORY_COUNTERS:  # forget other days' counters
            today = day_of(datetime.now(UTC))
            self._counts = {k: v for k, v in self._counts.items() if k.endswith(today)}
        for name in names:
            held_tokens, held_micros = self._counts.get(name, (0, 0))
            self._counts[name] = (held_tokens + tokens, held_micros + micros)

    async def read(self, names: list[str]) -> list[Spend]:
        counts = [self._counts.get(name, (0, 0)) for name in names]
        return [Spend(tokens, micros / MICROS) for tokens, micros in counts]


class RedisCounters:
    """A hash per (scope, day) with ``tokens`` and ``micros``; one round trip per call."""

    def __init__(self, client: Any, prefix: str) -> None:
        self._client = client
        self._prefix = prefix

    async def add(self, names: list[str], tokens: int, micros: int) -> None:
        async with self._client.pipeline(transaction=False) as pipe:
            for name in names:
                key = self._prefix + name
                pipe.hincrby(key, "tokens", tokens)
                pipe.hincrby(key, "micros", micros)
                pipe.expire(key, COUNTER_TTL_SECONDS)
            await pipe.execute()

    async def read(self, names: list[str]) -> list[Spend]:
        async with self._client.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hmget(self._prefix + name, "tokens", "micros")
            rows = await pipe.execute()
        return [Spend(int(t or 0), int(m or 0) / MICROS) for t, m in rows]


def day_of(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y%m%d")


def key_scope(caller: Caller) -> str | None:
    """The id usage and budgets use for a key: never the key itself."""
    if caller.key_id is not None:
        return caller.key_id
    if caller.origin == "config":
        return f"config:{caller.name}"
    if caller.origin == "env":
        return "env"
    return None


class BudgetGate:
    def __init__(
        self, counters: BudgetCounters, app_budgets: dict[str, Budget], guard: StoreGuard
    ) -> None:
        self._counters = counters
        self._app_budgets = dict(app_budgets)
        self._guard = guard
        self._charging: set[asyncio.Task[None]] = set()
        self.uncounted_tokens = 0  # proxy_budget_tokens_uncounted

    def _caps(self, caller: Caller, app_id: str | None) -> list[tuple[str, str, Budget]]:
        """(counter scope, who, budget) for each budget this request falls under."""
        caps: list[tuple[str, str, Budget]] = []
        key = key_scope(caller)
        capped = caller.max_tokens_per_day is not None or caller.max_cost_per_day is not None
        if key is not None and capped:  # else no Budget is built: every request comes here
            key_budget = Budget(
                max_tokens_per_day=caller.max_tokens_per_day,
                max_cost_per_day=caller.max_cost_per_day,
            )
            caps.append((f"key:{key}", f"API key {caller.name!r}", key_budget))
        app_budget = self._app_budgets.get(app_id or "")
        if app_id and app_budget is not None and app_budget.capped:
            caps.append((f"app:{app_id}", f"app {app_id}", app_budget))
        return caps

    async def check(self, caller: Caller, app_id: str | None) -> None:
        """Raise ``BudgetExceeded`` if a budget of this request is spent for today.

        Costs nothing for callers without budgets. With the store down the turn is let
        through (as rate limits are): refusing every caller would be worse.
        """
        caps = self._caps(caller, app_id)
        if not caps:
            return
        today = day_of(datetime.now(UTC))
        spent = await self._guard(self._counters.read([f"budget:{s}:{today}" for s, _, _ in caps]))
        if spent is FAILED:
            return
        for (_, who, budget), spend in zip(caps, spent, strict=True):
            if budget.max_tokens_per_day is not None and spend.tokens >= budget.max_tokens_per_day:
                raise BudgetExceeded(
                    f"the daily token budget of {who} is spent "
                    f"({spend.tokens} of {budget.max_tokens_per_day} tokens); "
                    "it resets at 00:00 UTC"
                )
            if budget.max_cost_per_day is not None and spend.cost >= budget.max_cost_per_day:
                raise BudgetExceeded(
                    f"the daily cost budget of {who} is spent "
                    f"({spend.cost:.6f} of {budget.max_cost_per_day}); it resets at 00:00 UTC"
                )

    async def spent_today(self, scopes: list[str]) -> list[Spend]:
        today = day_of(datetime.now(UTC))
        return await self._counters.read([f"budget:{s}:{today}" for s in scopes])

    def charge(self, key_id: str | None, app_id: str | None, tokens: int, cost: float) -> None:
        """Add a completion's tokens and cost to today's counters, in the background."""
        scopes = [f"key:{key_id}"] if key_id else []
        if app_id:
            scopes.append(f"app:{app_id}")
        if not scopes:
            return
        today = day_of(datetime.now(UTC))
        names = [f"budget:{s}:{today}" for s in scopes]
        task = asyncio.create_task(self._add(names, tokens, round(cost * MICROS)))
        self._charging.add(task)
        task.add_done_callback(self._charging.discard)

    async def _add(self, names: list[str], tokens: int, micros: int) -> None:
        # Not retried: an increment that timed out may have run (counted twice).
        _, error = await self._guard.attempt(self._counters.add(names, tokens, micros))
        if error is not None:
            self.uncounted_tokens += tokens
            level = logging.WARNING if slow(error) else logging.ERROR
            log.log(level, "budget counters not updated: %d tokens uncounted: %r", tokens, error)

    async def drain(self) -> None:
        if self._charging:
            await asyncio.wait(list(self._charging), timeout=5)
