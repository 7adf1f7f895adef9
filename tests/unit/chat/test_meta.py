"""meta.info values: merged for a non-streaming reply, queued per task by operators."""

from __future__ import annotations

import asyncio

from proxy.chat.meta import merge, queue_for_task, requeue_late_meta, take_queued
from proxy.context.history import TurnStart
from proxy.context.memory_store import MemoryHistoryStore


def test_merge_later_values_win_and_source_lists_add_up() -> None:
    merged = merge(
        [
            {"sources": [{"id": 1}], "card": "a", "n": 1},
            {"sources": [{"id": 2}], "card": "b"},
            {"n": [3]},
        ]
    )
    assert merged == {"sources": [{"id": 1}, {"id": 2}], "card": "b", "n": [3]}
    assert merge([]) == {}


async def test_queued_values_go_out_once_in_order_per_task() -> None:
    store = MemoryHistoryStore(ttl_seconds=60)
    await queue_for_task(store, "app:t1", {"vip": True})
    await queue_for_task(store, "app:t1", {"note": "second"})
    await queue_for_task(store, "app:t2", {"other": 1})
    assert await take_queued(store, "app:t1") == [{"vip": True}, {"note": "second"}]
    assert await take_queued(store, "app:t1") == []
    assert await take_queued(store, "app:t2") == [{"other": 1}]
    # The queue has its own key: the task's history is untouched.
    assert (await store.load("app:t1", limit=10)).total_messages == 0


async def test_meta_info_a_late_turn_start_took_goes_back_to_the_queue() -> None:
    store = MemoryHistoryStore()
    await queue_for_task(store, "t", {"card": "vip"})
    release = asyncio.Event()

    async def late_start() -> TurnStart:  # the store answers after the turn gave up
        await release.wait()
        return await store.begin_turn("t", "r1", "a1", limit=10, take_meta=True)

    starting = asyncio.ensure_future(late_start())
    requeue_late_meta(store, "t", starting)
    release.set()
    await starting
    assert await take_queued(store, "t") == []  # taken by the late start...
    await asyncio.sleep(0.01)
    assert await take_queued(store, "t") == [{"card": "vip"}]  # ...and queued again
