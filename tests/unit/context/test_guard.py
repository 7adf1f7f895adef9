"""Which store failures are worth a retry, and which mean the store is there but busy."""

from __future__ import annotations

import asyncio

import pytest
from redis import exceptions as redis_errors

from proxy.context.guard import FAILED, StoreGuard, slow, transient

CASES = [
    # (error, transient: retry it, slow: the store is there, a turn is still recorded)
    (TimeoutError(), True, True),
    (redis_errors.TimeoutError("socket timeout"), True, True),
    (redis_errors.MaxConnectionsError("Too many connections"), True, True),
    (ConnectionRefusedError(), True, False),
    (redis_errors.ConnectionError("Connection refused"), True, False),
    (redis_errors.BusyLoadingError("loading"), True, False),
    (redis_errors.ReadOnlyError("replica"), True, False),
    (redis_errors.ResponseError("ERR Error running script"), False, False),
    (ValueError("bad data"), False, False),
]


@pytest.mark.parametrize(("error", "is_transient", "is_slow"), CASES, ids=lambda c: repr(c))
def test_failure_kinds(error: Exception, is_transient: bool, is_slow: bool) -> None:
    assert (transient(error), slow(error)) == (is_transient, is_slow)


async def test_a_guarded_call_returns_its_result_or_failed() -> None:
    guard = StoreGuard(timeout_seconds=0.05)

    async def answer() -> int:
        return 7

    async def refuse() -> int:
        raise redis_errors.ConnectionError("refused")

    async def stall() -> int:
        await asyncio.sleep(1)
        return 0

    assert await guard(answer()) == 7
    assert await guard(refuse()) is FAILED
    result, error = await guard.attempt(stall())
    assert result is FAILED and isinstance(error, TimeoutError)
    assert guard.errors == 2
