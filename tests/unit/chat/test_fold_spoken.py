"""A 905 that arrived ahead of its turn is folded in at commit; if the store stalls while
folding, the turn is written as it was and every 905 taken waits again (none is lost)."""

from __future__ import annotations

import asyncio
import time

from proxy.call import CallContext
from proxy.chat.inflight import InFlight
from proxy.chat.turns import PendingTurn, TurnWriter
from proxy.context.budget import TokenCounter
from proxy.context.guard import StoreGuard
from proxy.context.history import StoredAnswer, StoredMessage, TaskHistory
from proxy.context.memory_store import MemoryHistoryStore
from proxy.metrics import ProxyMetrics
from proxy.voice.spoken import SpokenTextReconciler

ANSWER = StoredAnswer(content="Great.", model="m", finish_reason="stop", completion_id="c-1")


class StallingLoads(MemoryHistoryStore):
    """``load`` hangs while ``stalled``: a store past the guard's time box."""

    stalled = False

    async def load(self, task_id: str, limit: int) -> TaskHistory:
        if self.stalled:
            await asyncio.sleep(3600)
        return await super().load(task_id, limit)


def writer_for(store: MemoryHistoryStore) -> tuple[TurnWriter, SpokenTextReconciler]:
    guard = StoreGuard(0.05)
    metrics = ProxyMetrics()
    spoken = SpokenTextReconciler(store, None, grace_seconds=3600)
    inflight = InFlight.for_replica(store, guard, metrics)
    writer = TurnWriter(store, TokenCounter(), guard, metrics, inflight, spoken=spoken)
    return writer, spoken


def turn() -> PendingTurn:
    user = StoredMessage(role="user", content="Yes.")
    return PendingTurn(CallContext(task_id="t"), "t", None, [user], None)


async def contents(store: MemoryHistoryStore) -> list[object]:
    return [m.content for m in (await store.load("t", 10)).messages]


async def test_a_fold_that_times_out_writes_the_turn_and_requeues_the_905s_it_took() -> None:
    store = StallingLoads()
    writer, spoken = writer_for(store)
    # The welcome message, heard before the turn began: folding it reads the history.
    welcome = {"text": "Are you calling about your card?", "at": time.time() - 5}
    await store.push_pending("t", welcome)
    store.stalled = True
    await writer.finished(turn(), [StoredMessage(role="assistant", content="Great.")], ANSWER)
    store.stalled = False
    assert await contents(store) == ["Yes.", "Great."]  # written as it was, once
    assert await store.take_pending("t") == [welcome]  # waits again: not lost
    await spoken.close()


async def test_a_fold_that_succeeds_places_the_905_before_the_turn() -> None:
    store = StallingLoads()
    writer, spoken = writer_for(store)
    welcome = {"text": "Are you calling about your card?", "at": time.time() - 5}
    await store.push_pending("t", welcome)
    await writer.finished(turn(), [StoredMessage(role="assistant", content="Great.")], ANSWER)
    assert await contents(store) == ["Are you calling about your card?", "Yes.", "Great."]
    assert await store.take_pending("t") == []
    await spoken.close()
