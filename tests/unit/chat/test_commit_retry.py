"""Turn commits retried in the background: bounded, in order per task, never twice.

The store is the embedded one behind a switch that makes ``commit_turn`` fail the way
Redis does under load: time out before writing, or write and then time out (the late
landing). The request path (``TurnWriter.finished``) must not wait for any of it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from proxy.call import CallContext
from proxy.chat.commit_retry import CommitRetrier, TurnCommit
from proxy.chat.inflight import InFlight, LeaseKeeper
from proxy.chat.turns import PendingTurn, TurnWriter
from proxy.context.budget import TokenCounter
from proxy.context.guard import StoreGuard
from proxy.context.history import StoredAnswer, StoredMessage
from proxy.context.memory_store import MemoryHistoryStore
from proxy.metrics import ProxyMetrics

TIMEOUT = 0.05
ANSWER = StoredAnswer(content="answer", model="m", finish_reason="stop")


class FlakyStore(MemoryHistoryStore):
    """``failures``: how the next commits fail, in order ("stall", "late", or an error)."""

    def __init__(self) -> None:
        super().__init__()
        self.failures: list[Any] = []
        self.calls: list[bool] = []  # the retry flag of every commit_turn call

    async def commit_turn(self, *args: Any, **kwargs: Any) -> bool:
        self.calls.append(kwargs.get("retry", False))
        failure = self.failures.pop(0) if self.failures else None
        if failure == "stall":  # never reaches the store: the caller's time box ends it
            await asyncio.sleep(3600)
        if failure == "late":  # written, but the answer comes too late
            await super().commit_turn(*args, **kwargs)
            await asyncio.sleep(3600)
        if isinstance(failure, Exception):
            raise failure
        return await super().commit_turn(*args, **kwargs)


def writer(store: FlakyStore, **retry: Any) -> TurnWriter:
    guard = StoreGuard(TIMEOUT)
    retry.setdefault("attempt_timeout", TIMEOUT)
    retries = CommitRetrier(store, **retry)
    counter = TokenCounter()
    counter.count_message(StoredMessage(role="user", content="warm up"))  # loads the encoding
    leases = LeaseKeeper(store, guard, lease_seconds=4.0, holder="replica-a")
    inflight = InFlight(leases, retries, wait_seconds=TIMEOUT)
    return TurnWriter(store, counter, guard, ProxyMetrics(), inflight)


async def pending_turn(store: FlakyStore, task_id: str, request_id: str, text: str) -> PendingTurn:
    claim = await store.claim_request(task_id, request_id)
    new_turn = [StoredMessage(role="user", content=text, request_id=request_id)]
    return PendingTurn(CallContext(task_id, request_id), task_id, claim.attempt_id, new_turn, None)


def reply(text: str, request_id: str) -> list[StoredMessage]:
    return [StoredMessage(role="assistant", content=text, request_id=request_id)]


async def contents(store: FlakyStore, task_id: str) -> list[Any]:
    return [m.content for m in (await store.load(task_id, 100)).messages]


async def finished(turns: TurnWriter, turn: PendingTurn, text: str) -> float:
    started = time.perf_counter()
    assert turn.call.request_id is not None
    await turns.finished(turn, reply(text, turn.call.request_id), ANSWER)
    return time.perf_counter() - started


async def wait_idle(retries: CommitRetrier, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while retries.pending:
        assert time.monotonic() < deadline, "the retries never finished"
        await asyncio.sleep(0.01)


async def test_a_commit_that_landed_late_is_not_written_twice() -> None:
    store = FlakyStore()
    turns = writer(store)
    store.failures = ["late"]
    turn = await pending_turn(store, "t", "r1", "q1")
    assert await finished(turns, turn, "a1") < TIMEOUT + 0.1  # the reply did not wait
    await wait_idle(turns.retries)
    assert store.calls == [False, True]
    assert await contents(store, "t") == ["q1", "a1"]
    assert (turns.retries.recorded, turns.retries.lost) == (1, 0)


async def test_a_commit_that_never_landed_lands_on_retry_before_the_next_turn() -> None:
    store = FlakyStore()
    turns = writer(store)
    store.failures = ["stall", "stall", RedisConnectionError("reset")]
    first = await pending_turn(store, "t", "r1", "q1")
    assert await finished(turns, first, "a1") < TIMEOUT + 0.1
    assert turns.retries.has_pending("t")
    # The next turn of the task queues behind it (it must not land first).
    second = await pending_turn(store, "t", "r2", "q2")
    assert await finished(turns, second, "a2") < 0.05
    await wait_idle(turns.retries)
    assert await contents(store, "t") == ["q1", "a1", "q2", "a2"]
    assert turns.retries.recorded == 2 and not turns.retries.has_pending("t")
    third = await pending_turn(store, "t", "r3", "q3")  # back to the direct path
    await finished(turns, third, "a3")
    assert store.calls[-1] is False and await contents(store, "t") == [
        "q1",
        "a1",
        "q2",
        "a2",
        "q3",
        "a3",
    ]


async def test_the_next_turn_waits_briefly_for_a_retry_of_its_task() -> None:
    store = FlakyStore()
    turns = writer(store)
    store.failures = ["stall"]
    await finished(turns, await pending_turn(store, "t", "r1", "q1"), "a1")
    started = time.perf_counter()
    await turns.settled("t")  # what the next request does before reading the history
    assert time.perf_counter() - started <= TIMEOUT + 0.05
    await wait_idle(turns.retries)
    assert await contents(store, "t") == ["q1", "a1"]


async def test_a_newer_attempt_of_the_request_makes_the_retry_give_way() -> None:
    store = FlakyStore()
    turns = writer(store)
    store.failures = ["stall"]
    await finished(turns, await pending_turn(store, "t", "r1", "stale"), "stale reply")
    retry = await pending_turn(store, "t", "r1", "q1")  # the engine retried: a takeover
    await wait_idle(turns.retries)
    await finished(turns, retry, "a1")
    assert await contents(store, "t") == ["q1", "a1"]
    assert turns.retries.refused == 1


async def test_retries_are_bounded_in_attempts_and_time() -> None:
    store = FlakyStore()
    turns = writer(store, max_attempts=3, max_delay=0.01)
    store.failures = [RedisConnectionError("down")] * 10
    await finished(turns, await pending_turn(store, "t", "r1", "q1"), "a1")
    await wait_idle(turns.retries)
    assert store.calls == [False, True, True, True]
    assert turns.retries.lost == 1 and await contents(store, "t") == []

    store.failures = [TimeoutError()] * 1000
    timed = writer(store, max_attempts=1000, retry_for=0.2, max_delay=0.01)
    await finished(timed, await pending_turn(store, "u", "r1", "q1"), "a1")
    started = time.monotonic()
    await wait_idle(timed.retries)
    assert time.monotonic() - started < 1.0 and timed.retries.lost == 1


async def test_an_error_that_is_not_transient_is_not_retried() -> None:
    store = FlakyStore()
    turns = writer(store)
    store.failures = [ResponseError("ERR Error running script")]
    await finished(turns, await pending_turn(store, "t", "r1", "q1"), "a1")
    assert store.calls == [False] and not turns.retries.has_pending("t")
    store.failures = [TimeoutError(), ResponseError("ERR Error running script")]
    await finished(turns, await pending_turn(store, "u", "r1", "q1"), "a1")
    await wait_idle(turns.retries)
    assert store.calls == [False, False, True] and turns.retries.lost == 1


async def test_commits_held_for_a_retry_are_bounded() -> None:
    store = FlakyStore()
    turns = writer(store, max_pending=2)
    store.failures = ["stall"] * 100
    for task in ("a", "b", "c"):
        await finished(turns, await pending_turn(store, task, "r1", "q"), "a")
    assert turns.retries.pending == 2 and turns.retries.lost == 1
    assert not turns.retries.has_pending("c")
    store.failures = []
    await wait_idle(turns.retries)
    assert [await contents(store, t) for t in ("a", "b", "c")] == [["q", "a"], ["q", "a"], []]


async def test_drain_lets_retries_land_then_gives_up_on_the_rest() -> None:
    store = FlakyStore()
    turns = writer(store, max_delay=0.01)
    store.failures = ["stall"]
    await finished(turns, await pending_turn(store, "t", "r1", "q1"), "a1")
    await turns.drain()
    assert await contents(store, "t") == ["q1", "a1"]

    stuck = writer(store)
    store.failures = [RedisConnectionError("down")] * 1000
    await finished(stuck, await pending_turn(store, "u", "r1", "q1"), "a1")
    await stuck.retries.close(timeout=0.2)
    assert stuck.retries.lost == 1 and stuck.retries.pending == 0
    commit = TurnCommit("u", None, None, [], None)
    assert not stuck.retries.submit(commit)  # closed


async def test_a_commit_retried_after_an_erasure_is_refused_and_counted() -> None:
    store, metrics = FlakyStore(), ProxyMetrics()
    turns = writer(store, metrics=metrics)
    turn = await pending_turn(store, "t", "r1", "said before the erasure")
    store.failures = [RedisConnectionError("lost")]  # the first try fails: retried later
    await finished(turns, turn, "reply")
    await store.erase("t", time.time())  # on another replica, before the retry lands
    await turns.retries.settled("t", 5)
    assert await contents(store, "t") == []
    assert store.calls == [False, True]
    assert turns.retries.refused == 1 and turns.retries.lost == 0
    assert metrics.turns_not_recorded.labels("erased")._value.get() == 1

    # A turn that begins after the erasure is recorded.
    later = await pending_turn(store, "t", "r2", "said after")
    await finished(turns, later, "reply")
    assert await contents(store, "t") == ["said after", "reply"]
