"""The last two stages, relay and commit, after the first ones, without HTTP.

A turn goes through the stages as ``ChatService`` runs them; the upstream is a stream
of scripted events. What the caller received is what the history holds: all of it when
the reply ends, and only what was sent when the caller leaves.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

import orjson

from proxy.call import CallContext
from proxy.chat.inflight import InFlight
from proxy.chat.relay import RelayPlan, StreamRelay
from proxy.chat.stages import TurnDeps, assemble_turn, read_task
from proxy.chat.turns import TurnWriter
from proxy.context.budget import TokenCounter
from proxy.context.guard import FAILED, StoreGuard
from proxy.context.history import ClaimState
from proxy.context.memory_store import MemoryHistoryStore
from proxy.metrics import ProxyMetrics
from proxy.settings import HistoryPolicy
from proxy.upstream.routes import CompletionStream
from proxy.upstream.sse import DONE

POLICY = HistoryPolicy()


def delta(finish: str | None = None, **content: Any) -> bytes:
    choice = {"index": 0, "delta": content, "finish_reason": finish}
    return orjson.dumps({"id": "chatcmpl-1", "model": "m", "choices": [choice]})


@dataclass
class ScriptedStream:
    """An upstream stream: its events, one network read per batch."""

    first_events: list[bytes]
    rest: list[list[bytes]] = field(default_factory=list)
    waited: float = 0.0
    stalls: bool = False  # after ``rest``, the upstream sends nothing more

    async def batches(self) -> AsyncGenerator[list[bytes], None]:
        for batch in self.rest:
            await asyncio.sleep(0)
            yield batch
        if self.stalls:
            await asyncio.sleep(3600)

    def close(self) -> None:
        return None


HELLO = ScriptedStream(
    [delta(role="assistant", content="Hel")],
    [[delta(content="lo.")], [delta(finish="stop"), DONE]],
)
STALLS = ScriptedStream([delta(role="assistant", content="Hel")], stalls=True)


def make_deps(store: MemoryHistoryStore) -> TurnDeps:
    guard = StoreGuard(1.0)
    metrics = ProxyMetrics()
    inflight = InFlight.for_replica(store, guard, metrics)
    counter = TokenCounter()
    writer = TurnWriter(store, counter, guard, metrics, inflight)
    return TurnDeps(store, guard, inflight, writer, counter, metrics)


async def relay_for(
    deps: TurnDeps, call: CallContext, text: str, upstream: ScriptedStream = HELLO
) -> StreamRelay:
    """The stages before the upstream call, as ``ChatService`` runs them."""
    assert call.task_id is not None
    messages = [{"role": "user", "content": text}]
    await deps.inflight.make_way(call.task_id, call.request_id)
    reads = await read_task(deps, call, call.task_id, POLICY, messages, take_meta=False)
    assert reads.history is not FAILED
    owner = deps.inflight.register(
        call.task_id, call.request_id or reads.attempt_id, reads.attempt_id, claimed=True
    )
    assembled = await assemble_turn(
        deps, call, call.task_id, reads, reads.history, messages, POLICY, owner, None
    )
    plan = RelayPlan({"model": "m", "messages": assembled.messages}, "m", 0.0)
    plan.turn = assembled.turn

    async def first() -> CompletionStream:
        return upstream

    async def no_next(body: dict[str, Any]) -> CompletionStream:
        raise AssertionError("no tool steps here")

    return StreamRelay(plan, first, no_next, deps.writer, deps.metrics)


async def history(store: MemoryHistoryStore, task: str) -> list[tuple[str, Any, bool]]:
    loaded = await store.load(task, 100)
    return [(m.role, m.content, m.interrupted) for m in loaded.messages]


async def test_a_whole_reply_is_relayed_then_committed_before_done() -> None:
    store = MemoryHistoryStore()
    deps = make_deps(store)
    relay = await relay_for(deps, CallContext("t", "r1"), "hi")
    frames = [frame async for frame in relay.frames()]
    assert frames[-1].endswith(b"data: [DONE]\n\n")
    assert await history(store, "t") == [("user", "hi", False), ("assistant", "Hello.", False)]
    assert deps.inflight.leases.held == 0  # the commit ended the lease
    again = await store.claim_request("t", "r1", "a2")
    assert again.state is ClaimState.REPLAY and again.answer is not None
    assert again.answer.content == "Hello."
    await deps.inflight.drain()


async def test_a_caller_that_leaves_has_what_it_received_recorded() -> None:
    store = MemoryHistoryStore()
    deps = make_deps(store)
    relay = await relay_for(deps, CallContext("t", "r1"), "hi")
    frames = relay.frames()
    assert b"Hel" in await anext(frames)
    # A frame counts as received once the caller asks for the next one.
    assert b"lo." in await anext(frames)
    await frames.aclose()  # the caller left: "lo." was not written
    await deps.inflight.settled("t")  # what the task's next turn waits for
    assert await history(store, "t") == [("user", "hi", False), ("assistant", "Hel", True)]
    assert deps.inflight.leases.held == 0
    await deps.inflight.drain()


async def test_the_next_turn_ends_a_reply_still_streaming_and_sees_it() -> None:
    store = MemoryHistoryStore()
    deps = make_deps(store)
    seen: list[bytes] = []
    started = asyncio.Event()

    async def caller() -> None:  # serves the turn; the upstream stalls after "Hel"
        relay = await relay_for(deps, CallContext("t", "r1"), "one", STALLS)
        async for frame in relay.frames():
            seen.append(frame)
            started.set()

    earlier = asyncio.create_task(caller())
    await started.wait()
    relay = await relay_for(deps, CallContext("t", "r2"), "two")
    assert earlier.cancelled() and len(seen) == 1
    assert relay.plan.body["messages"] == [
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "Hel"},
        {"role": "user", "content": "two"},
    ]
    assert relay.plan.turn is not None
    assert [m.content for m in relay.plan.turn.new_turn] == ["two"]
    [frame async for frame in relay.frames()]
    assert await history(store, "t") == [
        ("user", "one", False),
        ("assistant", "Hel", True),
        ("user", "two", False),
        ("assistant", "Hello.", False),
    ]
    await deps.inflight.drain()
