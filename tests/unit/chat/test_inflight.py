"""The replica's lease keeper: a held lease outlives its length; a dropped one ends."""

from __future__ import annotations

import asyncio

from proxy.chat.inflight import LeaseKeeper
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
