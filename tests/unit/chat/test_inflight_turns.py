"""``InFlight``'s turns in flight, kept per task: a new turn ends its own task's earlier
turns and no other, and every turn is forgotten when it ends."""

from __future__ import annotations

import asyncio

from proxy.chat.commit_retry import CommitRetrier
from proxy.chat.inflight import InFlight, LeaseKeeper
from proxy.context.guard import StoreGuard
from proxy.context.memory_store import MemoryHistoryStore


def in_flight() -> InFlight:
    store = MemoryHistoryStore(ttl_seconds=60)
    guard = StoreGuard(0.5)
    leases = LeaseKeeper(store, guard, lease_seconds=4.0, holder="replica-a")
    return InFlight(leases, CommitRetrier(store, attempt_timeout=0.5), wait_seconds=0.5)


async def serve(turns: InFlight, task_id: str, key: str, started: asyncio.Event) -> None:
    owner = turns.register(task_id, key, f"attempt-{key}", claimed=True)
    started.set()
    try:
        await asyncio.sleep(3600)
    finally:
        turns.forget(task_id, key, owner)


async def test_a_new_turn_ends_its_own_tasks_turns_only() -> None:
    turns = in_flight()
    served: dict[tuple[str, str], asyncio.Task[None]] = {}
    for task_id in ("a", "b", "c"):
        for key in ("r1", "r2"):
            started = asyncio.Event()
            served[(task_id, key)] = asyncio.create_task(serve(turns, task_id, key, started))
            await started.wait()
    assert turns.turns == 6
    await turns.make_way("b", "r2")  # a retry of r2 in task b: r1 of b ends, r2 stays
    assert [key for key, task in served.items() if task.done()] == [("b", "r1")]
    assert turns.turns == 5
    turns.take_over("b", "r2")  # the retry owns r2 now: the attempt streaming it ends
    await asyncio.sleep(0)
    assert served[("b", "r2")].cancelled()
    assert turns.turns == 4
    for task in served.values():
        task.cancel()
    await asyncio.gather(*served.values(), return_exceptions=True)
    assert turns.turns == 0
    await turns.leases.close()
