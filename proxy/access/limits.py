"""Per-key rate limits (shared by all replicas through the history store) and a
per-process cap on concurrent chat requests."""

from __future__ import annotations

import time

from proxy.access.catalog import Caller
from proxy.context.guard import FAILED, StoreGuard
from proxy.context.history import Counters
from proxy.errors import Overloaded, RateLimited

WINDOW_SECONDS = 60


class RateLimiter:
    def __init__(self, store: Counters, guard: StoreGuard) -> None:
        self._store = store
        self._guard = guard

    async def check(self, caller: Caller) -> None:
        """Raise ``RateLimited`` over the key's per-minute limit; keys without one cost nothing.

        Fixed one-minute windows. If the store is down the request is let through (the
        limit protects the upstream budget; refusing every caller would be worse).
        """
        limit = caller.rate_limit_per_minute
        if not limit:
            return
        now = time.time()
        window = int(now // WINDOW_SECONDS)
        count = await self._guard(
            self._store.hit(f"rate:{caller.key_id or caller.name}:{window}", WINDOW_SECONDS)
        )
        if count is not FAILED and count > limit:
            retry_after = max(1, int((window + 1) * WINDOW_SECONDS - now))
            raise RateLimited(
                f"this API key is limited to {limit} requests per minute",
                headers={"Retry-After": str(retry_after)},
            )


class ConcurrencyGate:
    """At most ``limit`` chat requests in this process at once; the rest get 503 at once."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0

    def enter(self) -> None:
        if self.active >= self.limit:
            raise Overloaded(
                "the proxy is at its concurrent request limit; retry shortly",
                headers={"Retry-After": "1"},
            )
        self.active += 1

    def leave(self) -> None:
        self.active -= 1
