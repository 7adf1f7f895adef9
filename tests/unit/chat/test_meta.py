"""meta.info values: merged for a non-streaming reply, queued per task by operators."""

from __future__ import annotations

from proxy.chat.meta import merge, queue_for_task, take_queued
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
