"""Store calls that can never hang a request: time-boxed, and failures degrade."""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable, Mapping
from typing import Final, TypeVar

from proxy.context.history import TaskErased
from proxy.context.redis_errors import slow, transient
from proxy.context.redis_faults import FaultRecord

log = logging.getLogger(__name__)

__all__ = ["FAILED", "Failed", "StoreCallCancelled", "StoreGuard", "slow", "transient"]

T = TypeVar("T")


class Failed(enum.Enum):
    """What a guarded call returns when the store failed: ``result is FAILED``."""

    FAILED = "failed"


FAILED: Final = Failed.FAILED


def log_store_error(error: BaseException, extra: Mapping[str, object] | None = None) -> None:
    """A store call failed and the proxy carries on: a slow store (a call past its time
    box, every connection busy) is a warning, counted in ``proxy_store_timeouts``; an
    outage or a refusal is an error."""
    level = logging.WARNING if slow(error) else logging.ERROR
    log.log(level, "history store unavailable, continuing without it: %r", error, extra=extra)


class StoreGuard:
    def __init__(self, timeout_seconds: float) -> None:
        self.timeout = timeout_seconds
        self.errors = 0
        self.timeouts = 0  # of the errors, the slow ones (``slow``)
        self.faults = FaultRecord()  # errors that are configuration faults, by name

    async def __call__(self, operation: Awaitable[T]) -> T | Failed:
        result, error = await self.attempt(operation)
        if error is not None:
            log_store_error(error)
        return result

    async def attempt(self, operation: Awaitable[T]) -> tuple[T | Failed, Exception | None]:
        """``(result, None)``, or ``(FAILED, the error)``: counted, left to the caller
        to log (it knows what happens next)."""
        try:
            async with asyncio.timeout(self.timeout):
                return await operation, None
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is None or task.cancelling():
                raise  # this task is being cancelled (its caller left, a shutdown): go
            # Nobody cancelled this task: the awaited call itself ended cancelled (a
            # shielded claim someone cancelled). Raised on, it would cancel the request,
            # and an ``asyncio.gather`` of store reads would cancel its caller (a turn
            # answered with nothing). A failed store call, like any other.
            error: Exception = StoreCallCancelled("the store call was cancelled")
        except TaskErased as exc:
            return FAILED, exc  # the store's answer (a refusal), not a failure of it
        except Exception as exc:
            error = exc
        self.errors += 1
        self.timeouts += slow(error)
        self.faults.note(error)
        return FAILED, error


class StoreCallCancelled(TimeoutError):
    """A store call ended cancelled though its caller was not: its outcome is unknown,
    as after a timeout (``slow``: the turn is still recorded, its claim adopted)."""
