"""Which store failures are worth a retry, and which mean the store is there but busy."""

from __future__ import annotations

import asyncio
import logging

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
    (redis_errors.DataError("Invalid input of type: 'dict'"), False, False),
    # Not a refusal: the client's own error (mid-failover, say) is worth another attempt.
    (IndexError("Cannot choose from an empty sequence"), True, False),
    (redis_errors.RedisError("unexpected"), True, False),
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


async def test_a_store_call_that_ends_cancelled_fails_without_cancelling_its_caller() -> None:
    """A gathered read whose call ends cancelled (a shielded claim someone cancelled)
    must fail like any store call: raised on, ``gather`` cancels the whole request."""
    guard = StoreGuard(timeout_seconds=1)
    claiming: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_soon(claiming.cancel)

    async def answer() -> int:
        return 7

    (claim, claim_error), (loaded, load_error) = await asyncio.gather(
        guard.attempt(asyncio.shield(claiming)), guard.attempt(answer())
    )
    assert claim is FAILED and slow(claim_error) and transient(claim_error)
    assert (loaded, load_error) == (7, None)
    assert guard.errors == 1


async def test_a_cancelled_caller_is_still_cancelled() -> None:
    guard = StoreGuard(timeout_seconds=5)
    started = asyncio.Event()

    async def stall() -> int:
        started.set()
        await asyncio.sleep(5)
        return 0

    async def caller() -> object:
        return await asyncio.gather(guard.attempt(stall()))

    task = asyncio.ensure_future(caller())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert guard.errors == 0


@pytest.mark.parametrize(("error", "is_transient", "is_slow"), CASES, ids=lambda c: repr(c))
async def test_a_slow_store_is_a_warning_and_counted_an_outage_an_error(
    error: Exception, is_transient: bool, is_slow: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """Under load a call past its time box is handled (the turn is still recorded): a
    warning, counted in ``timeouts`` (proxy_store_timeouts_total). Anything else the
    operator must look at: an error."""
    del is_transient
    guard = StoreGuard(timeout_seconds=1.0)

    async def fail() -> None:
        raise error

    with caplog.at_level(logging.WARNING, logger="proxy.context.guard"):
        assert await guard(fail()) is FAILED
    [record] = [r for r in caplog.records if "history store unavailable" in r.getMessage()]
    assert record.levelno == (logging.WARNING if is_slow else logging.ERROR)
    assert (guard.errors, guard.timeouts) == (1, 1 if is_slow else 0)
