"""Store calls that can never hang a request: time-boxed, and failures degrade."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

log = logging.getLogger(__name__)

FAILED: Any = object()  # what a guarded call returns when the store failed


class StoreGuard:
    def __init__(self, timeout_seconds: float) -> None:
        self.timeout = timeout_seconds
        self.errors = 0

    async def __call__(self, operation: Awaitable[Any]) -> Any:
        try:
            async with asyncio.timeout(self.timeout):
                return await operation
        except Exception as exc:
            self.errors += 1
            log.error("history store unavailable, continuing without it: %r", exc)
            return FAILED
