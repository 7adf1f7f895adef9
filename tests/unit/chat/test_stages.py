"""The stages of a turn before the upstream call, each on its own, without HTTP.

The store is the embedded one (``MemoryHistoryStore``), behind a switch that makes its
reads fail the way Redis does: refused (down) or timed out (slow).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoPermissionError

from proxy.call import CallContext
from proxy.chat.inflight import InFlight
from proxy.chat.meta import queue_for_task, take_queued
from proxy.chat.stages import (
    TaskReads,
    TurnDeps,
    assemble_turn,
    plan_request,
    read_task,
    resolve_claim,
    unassembled_turn,
)
from proxy.chat.turns import TurnWriter
from proxy.context.budget import TokenCounter
from proxy.context.guard import FAILED, StoreGuard
from proxy.context.history import (
    ClaimState,
    RequestClaim,
    StoredAnswer,
    StoredMessage,
    TaskHistory,
)
from proxy.context.memory_store import MemoryHistoryStore
from proxy.metrics import ProxyMetrics
from proxy.settings import HistoryPolicy, Settings
from proxy.voice.spoken import SpokenTextReconciler

TIMEOUT = 0.2
POLICY = HistoryPolicy()
ANSWER = StoredAnswer(content="stored answer", model="m", finish_reason="stop")


class SwitchStore(MemoryHistoryStore):
    """``load_fails``: "down" (connection refused), "slow" (never answers), "refused"
    (the store answers with an error: an ACL without a permission) or None."""

    def __init__(self) -> None:
        super().__init__()
        self.load_fails: str | None = None

    async def load(self, task_id: str, limit: int) -> TaskHistory:
        if self.load_fails == "down":
            raise RedisConnectionError("refused")
        if self.load_fails == "slow":
            await asyncio.sleep(3600)
        if self.load_fails == "refused":
            raise NoPermissionError("NOPERM this user has no permissions to run 'evalsha'")
        return await super().load(task_id, limit)


def make_deps(store: MemoryHistoryStore, spoken: SpokenTextReconciler | None = None) -> TurnDeps:
    guard = StoreGuard(TIMEOUT)
    metrics = ProxyMetrics()
    inflight = InFlight.for_replica(store, guard, metrics)
    counter = TokenCounter()
    writer = TurnWriter(store, counter, guard, metrics, inflight, spoken=spoken)
    return TurnDeps(store, guard, inflight, writer, counter, metrics)


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def contents(messages: list[Any]) -> list[Any]:
    return [m["content"] if isinstance(m, dict) else m.content for m in messages]


async def stored(store: MemoryHistoryStore, task: str) -> list[Any]:
    return contents((await store.load(task, 100)).messages)


# plan_request


def test_plan_leaves_a_body_without_profile_as_it_is() -> None:
    body = {"model": "m", "messages": [user("hi")]}
    call = CallContext("t", "r1")
    plan = plan_request(body, call, None, Settings(), 1.0, tools=None, tool_runner=None)
    assert plan.body is body and plan.model == "m" and plan.tools is None
    assert plan.received_at == 1.0 and plan.turn is None and plan.meta == []


@pytest.mark.parametrize(
    ("mode", "task", "emit"),
    [("always", "t", True), ("never", "t", False), ("always", None, False)],
)
def test_plan_sends_meta_info_by_the_setting_and_only_to_a_task(
    mode: str, task: str | None, emit: bool
) -> None:
    body = {"model": "m", "messages": [user("hi")]}
    settings = Settings(meta_info_events=mode)
    plan = plan_request(body, CallContext(task), None, settings, 0.0, tools=None, tool_runner=None)
    assert plan.emit_meta is emit


# read_task


async def test_read_claims_the_request_loads_the_history_and_takes_the_queue() -> None:
    store = SwitchStore()
    await store.append("t", [StoredMessage(role="user", content="before")])
    await queue_for_task(store, "t", {"k": 1})
    deps = make_deps(store)
    reads = await read_task(deps, CallContext("t", "r1"), "t", POLICY, [], take_meta=True)
    assert reads.claim is not FAILED and reads.claim is not None
    assert reads.claim.state is ClaimState.NEW and reads.claim.attempt_id == reads.attempt_id
    assert not isinstance(reads.history, type(FAILED))
    assert contents(reads.history.messages) == ["before"]
    assert reads.queued == [{"k": 1}] and await take_queued(store, "t") == []
    assert reads.claiming is not None and not reads.store_refused


async def test_read_leaves_the_queue_to_a_caller_that_takes_meta_info() -> None:
    store = SwitchStore()
    await queue_for_task(store, "t", {"k": 1})
    reads = await read_task(make_deps(store), CallContext("t"), "t", POLICY, [], take_meta=False)
    assert reads.claim is None and reads.claiming is None and reads.queued == []
    assert await take_queued(store, "t") == [{"k": 1}]


async def test_only_a_store_that_refuses_the_call_leaves_the_turn_unrecorded() -> None:
    """Down (a refused connection) and slow are transient: the turn is recorded by the
    commit retries. An error answer (a configuration fault) is not: retrying cannot help."""
    store = SwitchStore()
    deps = make_deps(store)
    store.load_fails = "down"
    down = await read_task(deps, CallContext("t", "r1"), "t", POLICY, [], take_meta=False)
    assert down.history is FAILED and down.claim is FAILED
    assert isinstance(down.error, RedisConnectionError) and not down.store_refused
    store.load_fails = "slow"
    slow = await read_task(deps, CallContext("t", "r2"), "t", POLICY, [], take_meta=False)
    assert slow.history is FAILED and isinstance(slow.error, TimeoutError)
    assert not slow.store_refused
    assert slow.claiming is not None and not slow.claiming.done()  # runs on: the commit waits
    store.load_fails = "refused"
    refused = await read_task(deps, CallContext("t", "r3"), "t", POLICY, [], take_meta=False)
    assert refused.history is FAILED and isinstance(refused.error, NoPermissionError)
    assert refused.store_refused


# resolve_claim


async def reads_for(deps: TurnDeps, call: CallContext) -> TaskReads:
    assert call.task_id is not None
    return await read_task(deps, call, call.task_id, POLICY, [], take_meta=True)


async def test_a_finished_request_is_replayed_and_its_meta_info_kept() -> None:
    store = SwitchStore()
    deps = make_deps(store)
    first = await store.claim_request("t", "r1", "a1")
    user_turn = StoredMessage(role="user", content="q", request_id="r1")
    reply = StoredMessage(role="assistant", content="stored answer", request_id="r1")
    assert await store.commit_turn("t", "r1", first.attempt_id, [user_turn, reply], answer=ANSWER)
    await queue_for_task(store, "t", {"k": 1})
    call = CallContext("t", "r1")
    reads = await reads_for(deps, call)
    assert reads.queued == [{"k": 1}]
    answer = await resolve_claim(deps, call, "t", reads, POLICY)
    assert answer is not None and answer.content == "stored answer"
    assert await take_queued(store, "t") == [{"k": 1}]  # queued again for the next reply
    assert deps.metrics.replays._value.get() == 1


async def test_a_retry_takes_over_the_attempt_still_streaming_here() -> None:
    store = SwitchStore()
    deps = make_deps(store)
    call = CallContext("t", "r1")

    async def streaming() -> None:
        reads = await reads_for(deps, call)
        deps.inflight.register("t", "r1", reads.attempt_id, claimed=True)
        await asyncio.sleep(3600)

    earlier = asyncio.create_task(streaming())
    await asyncio.sleep(0.05)
    assert deps.inflight.turns == 1
    reads = await reads_for(deps, call)
    assert reads.claim is not None and reads.claim is not FAILED
    assert reads.claim.state is ClaimState.TAKEOVER
    assert await resolve_claim(deps, call, "t", reads, POLICY) is None
    await asyncio.sleep(0)
    assert earlier.cancelled() and deps.inflight.turns == 0
    assert reads.claiming is None  # the claim answered: confirmed
    await deps.inflight.drain()


async def test_905s_left_by_a_dead_reply_join_the_history_before_the_turn() -> None:
    store = SwitchStore()
    spoken = SpokenTextReconciler(store, None, grace_seconds=60.0)
    deps = make_deps(store, spoken)
    await store.hold("t", "dies", 0.05, holder="replica-a", create=True)
    assert await spoken.on_spoken("t", "Welcome!", at=5.0) == "pending"
    await asyncio.sleep(0.06)  # the replica died: its lease ended, nobody commits
    # The claim's answer, as the store gives it when no reply of the task is in flight
    # (built here: a real claim holds this turn's own lease, which the store counts as a
    # reply in flight, and the 905 would wait on).
    claim = RequestClaim(ClaimState.NEW, "a1", pending_spoken=1, others_in_flight=0)
    reads = TaskReads("a1", 0.0, claim, await store.load("t", 100))
    assert not isinstance(reads.history, type(FAILED)) and reads.history.messages == []
    assert await resolve_claim(deps, CallContext("t", "r1"), "t", reads, POLICY) is None
    assert not isinstance(reads.history, type(FAILED))
    assert contents(reads.history.messages) == ["Welcome!"]  # settled, then read again
    await spoken.close()


# assemble_turn / unassembled_turn


async def test_assembly_replaces_an_earlier_attempt_and_keeps_the_new_turn() -> None:
    store = SwitchStore()
    deps = make_deps(store)
    await store.append(
        "t",
        [
            StoredMessage(role="user", content="one"),
            StoredMessage(role="assistant", content="reply one"),
            StoredMessage(role="user", content="two", request_id="r2"),
            StoredMessage(role="assistant", content="cut", request_id="r2", interrupted=True),
        ],
    )
    call = CallContext("t", "r2")
    reads = await reads_for(deps, call)
    assert not isinstance(reads.history, type(FAILED))
    assembled = await assemble_turn(
        deps, call, "t", reads, reads.history, [user("two")], POLICY, None, "agent"
    )
    assert contents(assembled.messages) == ["one", "reply one", "two"]
    turn = assembled.turn
    assert contents(turn.new_turn) == ["two"] and turn.new_turn[0].request_id == "r2"
    assert turn.attempt_id == reads.attempt_id and turn.profile == "agent"
    assert turn.stored_messages == 2  # the earlier attempt's two are not counted
    assert turn.claiming is reads.claiming and turn.started_at == reads.started_at


async def test_assembly_takes_a_retried_turn_once() -> None:
    store = SwitchStore()
    deps = make_deps(store)
    await store.append(
        "t",
        [
            StoredMessage(role="user", content="hello?"),
            StoredMessage(role="assistant", content="", interrupted=True),
        ],
    )
    call = CallContext("t")  # a retry without a request id
    reads = await reads_for(deps, call)
    assert not isinstance(reads.history, type(FAILED))
    assembled = await assemble_turn(
        deps, call, "t", reads, reads.history, [user("hello?")], POLICY, None, None
    )
    assert contents(assembled.messages) == ["hello?"]
    assert assembled.turn.new_turn == []  # stored already: only the reply is written


async def test_engine_history_cuts_a_longer_stored_reply() -> None:
    store = SwitchStore()
    deps = make_deps(store)
    full = "Your card is blocked. I can unblock it now."
    await store.append(
        "t",
        [
            StoredMessage(role="user", content="card?"),
            StoredMessage(role="assistant", content=full),
        ],
    )
    call = CallContext("t", "r9")
    reads = await reads_for(deps, call)
    assert not isinstance(reads.history, type(FAILED))
    heard = [user("card?"), {"role": "assistant", "content": "Your card is blocked."}]
    assembled = await assemble_turn(
        deps, call, "t", reads, reads.history, [*heard, user("why?")], POLICY, None, None
    )
    assert contents(assembled.messages) == ["card?", "Your card is blocked.", "why?"]
    assert await stored(store, "t") == ["card?", "Your card is blocked."]


def test_a_slow_store_turn_is_recorded_as_the_request_carries_it() -> None:
    reads = TaskReads("a1", 5.0, None, FAILED, TimeoutError())
    messages = [user("one"), {"role": "assistant", "content": "reply"}, user("two")]
    turn = unassembled_turn(CallContext("t", "r1"), "t", reads, messages, POLICY, None, None)
    assert contents(turn.new_turn) == ["two"] and turn.new_turn[0].request_id == "r1"
    assert turn.seed is not None and contents(turn.seed) == ["one", "reply"]
    assert turn.attempt_id == "a1" and turn.policy is POLICY and turn.started_at == 5.0
