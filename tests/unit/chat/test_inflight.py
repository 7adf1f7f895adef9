"""The replica's lease keeper: a held lease outlives its length; a dropped one ends."""

from __future__ import annotations

import asyncio

from proxy.chat.inflight import InFlight, LeaseKeeper
from proxy.context.guard import StoreGuard
from proxy.context.memory_store import MemoryHistoryStore


async def in_flight(store: MemoryHistoryStore, task: str) -> int:
    """Other attempts in flight, as a new turn's claim sees them (the probe then ends)."""
    claim = await store.claim_request(task, "probe", "probe")
    await store.release(task, "probe")
    return claim.others_in_flight


async def test_a_kept_lease_lives_on_and_a_dropped_one_ends() -> None:
    store = MemoryHistoryStore()
    keeper = LeaseKeeper(store, StoreGuard(1.0), lease_seconds=0.2, holder="replica-a")
    await store.claim_request("t", "r1", "kept", lease_seconds=0.2)
    await store.claim_request("u", "r1", "dropped", lease_seconds=0.2)
    keeper.keep("t", "kept", registered=True)
    keeper.keep("u", "dropped", registered=True)
    keeper.drop("u", "dropped")
    await asyncio.sleep(0.5)  # more than two lease lengths
    assert await in_flight(store, "t") == 1
    assert await in_flight(store, "u") == 0
    await keeper.close()


async def test_a_lease_not_registered_by_a_claim_is_created_by_the_keeper() -> None:
    store = MemoryHistoryStore()
    keeper = LeaseKeeper(store, StoreGuard(1.0), lease_seconds=0.2, holder="replica-a")
    keeper.keep("t", "no-request-id", registered=False)
    await asyncio.sleep(0.05)
    assert await in_flight(store, "t") == 1
    await keeper.release("t", "no-request-id")
    assert keeper.held == 0
    assert await in_flight(store, "t") == 0
    await keeper.close()


# InFlight: the one owner of a task's turns in flight on this replica.


def inflight_for(store: MemoryHistoryStore, wait: float = 1.0) -> InFlight:
    guard = StoreGuard(wait)
    return InFlight.for_replica(store, guard)


async def serving(inflight: InFlight, task: str, key: str) -> None:
    inflight.register(task, key, f"attempt-{key}", claimed=False)
    await asyncio.sleep(3600)


async def test_a_new_turn_ends_the_earlier_turns_of_its_task_only() -> None:
    inflight = inflight_for(MemoryHistoryStore())
    same_task = asyncio.create_task(serving(inflight, "t", "r1"))
    no_request_id = asyncio.create_task(serving(inflight, "t", "attempt-x"))
    same_request = asyncio.create_task(serving(inflight, "t", "r2"))
    other_task = asyncio.create_task(serving(inflight, "u", "r1"))
    await asyncio.sleep(0.01)
    assert inflight.turns == 4
    await inflight.make_way("t", "r2")  # a retry of r2 is not ended here (its claim does)
    assert same_task.cancelled() and no_request_id.cancelled()
    assert not same_request.done() and not other_task.done()
    inflight.take_over("t", "r2")
    await asyncio.sleep(0)
    assert same_request.cancelled() and not other_task.done()
    other_task.cancel()
    await inflight.drain()


async def test_forget_only_forgets_the_owner_it_names() -> None:
    inflight = inflight_for(MemoryHistoryStore())
    first = asyncio.create_task(serving(inflight, "t", "r1"))
    await asyncio.sleep(0.01)
    second = asyncio.create_task(serving(inflight, "t", "r1"))  # a takeover registered
    await asyncio.sleep(0.01)
    inflight.forget("t", "r1", first)  # the first attempt ends late: the second stays
    assert inflight.turns == 1
    inflight.forget("t", "r1", second)
    assert inflight.turns == 0
    for task in (first, second):
        task.cancel()
    await inflight.drain()


async def test_the_next_turn_waits_for_an_interrupted_write_briefly() -> None:
    inflight = inflight_for(MemoryHistoryStore(), wait=0.1)
    written: list[str] = []

    async def write(delay: float, name: str) -> None:
        await asyncio.sleep(delay)
        written.append(name)

    inflight.write_in_background("t", write(0.05, "quick"))
    await inflight.settled("t")
    assert written == ["quick"]
    inflight.write_in_background("t", write(0.5, "stalled"))
    await inflight.settled("t")  # bounded by the store's time box: it goes on without
    assert written == ["quick"]
    await inflight.drain()  # a shutdown lets it land
    assert written == ["quick", "stalled"]
