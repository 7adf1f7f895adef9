"""The ``HistoryStore`` contract: the memory and Redis stores behave the same."""

# Full-width Chinese punctuation is deliberate in the roundtrip test.

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
import redis.asyncio as redis
from redis.crc import key_slot

from proxy.context.history import (
    ClaimState,
    HistoryStore,
    LeaseHeld,
    SpokenOutcome,
    StoredAnswer,
    StoredMessage,
    TaskErased,
)
from proxy.context.memory_store import MemoryHistoryStore
from proxy.context.redis_store import RedisHistoryStore


class FakeClock:
    """A clock the test moves by hand, for the memory store's TTL."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


ANSWER = StoredAnswer(content="hi there", model="m-1", finish_reason="stop", completion_id="c-1")


def user(text: str, request_id: str | None = None) -> StoredMessage:
    return StoredMessage(role="user", content=text, request_id=request_id)


def reply(text: str, request_id: str | None = None, interrupted: bool = False) -> StoredMessage:
    return StoredMessage(
        role="assistant", content=text, request_id=request_id, interrupted=interrupted
    )


async def contents(store: HistoryStore, task_id: str, limit: int = 1000) -> list[object]:
    return [m.content for m in (await store.load(task_id, limit)).messages]


async def lose_claims(store: HistoryStore, task_id: str) -> None:
    """What a failover does to claims the promoted replica had not received yet (Redis
    replicates asynchronously): the request markers and leases are gone, nothing else."""
    if isinstance(store, RedisHistoryStore):
        _, _, markers = store.task_keys(task_id)
        await store._client.delete(markers, store.live_key(task_id))
    else:
        assert isinstance(store, MemoryHistoryStore)
        task = store._tasks[task_id]
        task.markers.clear()
        task.leases.clear()


async def commit(store: HistoryStore, task_id: str, request_id: str, text: str) -> None:
    claim = await store.claim_request(task_id, request_id)
    turn = [user(text, request_id), reply(f"re:{text}", request_id)]
    assert await store.commit_turn(task_id, request_id, claim.attempt_id, turn, answer=ANSWER)


# Request claims.


async def test_claim_states_follow_the_marker(store: HistoryStore) -> None:
    first = await store.claim_request("t", "r1")
    assert first.state is ClaimState.NEW and first.answer is None
    second = await store.claim_request("t", "r1")
    assert second.state is ClaimState.TAKEOVER
    assert second.previous_attempt_id == first.attempt_id != second.attempt_id
    assert await store.commit_turn("t", "r1", second.attempt_id, [user("q", "r1")], answer=ANSWER)
    third = await store.claim_request("t", "r1")
    assert third.state is ClaimState.REPLAY and third.answer == ANSWER
    assert third.attempt_id not in (first.attempt_id, second.attempt_id)
    # A replay leaves the marker alone: the replaying attempt cannot commit.
    assert not await store.commit_turn("t", "r1", third.attempt_id, [user("x", "r1")], answer=None)
    assert (await store.claim_request("t", "r1")).state is ClaimState.REPLAY


async def test_retry_after_interrupted_attempt_never_duplicates_user_turn(
    store: HistoryStore,
) -> None:
    await commit(store, "t", "r0", "before")
    first = await store.claim_request("t", "r1")
    partial = [user("question", "r1"), reply("half an ans", "r1", interrupted=True)]
    assert await store.commit_turn("t", "r1", first.attempt_id, partial, answer=None)
    await store.append("t", [StoredMessage(role="system", content="operator note")])

    retry = await store.claim_request("t", "r1")
    assert retry.state is ClaimState.RETRY and retry.previous_attempt_id is None
    # A takeover of the retry must still replace what the interrupted attempt stored.
    takeover = await store.claim_request("t", "r1")
    assert takeover.state is ClaimState.TAKEOVER
    assert takeover.previous_attempt_id == retry.attempt_id
    full = [user("question", "r1"), reply("a full answer", "r1")]
    assert await store.commit_turn("t", "r1", takeover.attempt_id, full, answer=ANSWER)

    assert await contents(store, "t") == [
        "before",
        "re:before",
        "operator note",
        "question",
        "a full answer",
    ]
    assert (await store.claim_request("t", "r1")).state is ClaimState.REPLAY


async def test_stale_attempt_cannot_commit_after_takeover(store: HistoryStore) -> None:
    stale = await store.claim_request("t", "r1")
    fresh = await store.claim_request("t", "r1")
    turn = [user("q", "r1"), reply("stale", "r1")]
    assert not await store.commit_turn("t", "r1", stale.attempt_id, turn, answer=ANSWER)
    assert await contents(store, "t") == []
    assert (await store.claim_request("t", "r1")).state is ClaimState.TAKEOVER
    assert not await store.commit_turn("t", "r1", fresh.attempt_id, turn, answer=ANSWER)
    assert (await store.load("t", 10)).total_messages == 0


async def test_commit_without_request_id_appends(store: HistoryStore) -> None:
    assert await store.commit_turn("t", None, None, [user("a")], answer=None)
    assert await store.commit_turn("t", None, None, [user("b"), reply("c")], answer=ANSWER)
    assert await contents(store, "t") == ["a", "b", "c"]


async def test_a_retried_commit_that_landed_is_not_written_again(store: HistoryStore) -> None:
    """A commit timed out but landed: its retry changes nothing, even after later turns."""
    await commit(store, "t", "r0", "before")
    claim = await store.claim_request("t", "r1")
    turn = [user("q1", "r1"), reply("a1", "r1")]
    assert await store.commit_turn("t", "r1", claim.attempt_id, turn, answer=ANSWER)
    await commit(store, "t", "r2", "next")  # the next turn landed in between
    assert await store.commit_turn("t", "r1", claim.attempt_id, turn, answer=ANSWER, retry=True)
    assert await contents(store, "t") == ["before", "re:before", "q1", "a1", "next", "re:next"]
    assert (await store.claim_request("t", "r1")).state is ClaimState.REPLAY


async def test_a_retried_commit_that_never_landed_is_written(store: HistoryStore) -> None:
    claim = await store.claim_request("t", "r1")
    turn = [user("q1", "r1"), reply("a1", "r1", interrupted=True)]
    assert await store.commit_turn("t", "r1", claim.attempt_id, turn, answer=None, retry=True)
    assert await contents(store, "t") == ["q1", "a1"]
    assert (await store.claim_request("t", "r1")).state is ClaimState.RETRY
    # A retry of an attempt that was taken over since is refused, as the commit would be.
    stale = await store.claim_request("t", "r2")
    await store.claim_request("t", "r2")
    late = [user("q2", "r2"), reply("stale", "r2")]
    assert not await store.commit_turn("t", "r2", stale.attempt_id, late, answer=ANSWER, retry=True)
    assert await contents(store, "t") == ["q1", "a1"]


async def test_a_commit_without_request_id_is_written_once(store: HistoryStore) -> None:
    turn = [user("q"), reply("a")]
    assert await store.commit_turn("t", None, None, turn, answer=None)
    assert await store.commit_turn("t", None, None, [user("later")], answer=None)
    for retry in (False, True):  # an earlier try landed: its first message says so
        assert await store.commit_turn("t", None, None, turn, answer=None, retry=retry)
    assert await contents(store, "t") == ["q", "a", "later"]


async def test_a_claim_takes_the_attempt_id_it_is_given(store: HistoryStore) -> None:
    claim = await store.claim_request("t", "r1", "chosen-attempt")
    assert (claim.state, claim.attempt_id) == (ClaimState.NEW, "chosen-attempt")
    turn = [user("q", "r1"), reply("a", "r1")]
    assert await store.commit_turn("t", "r1", "chosen-attempt", turn, answer=ANSWER)


async def test_an_unconfirmed_claim_is_adopted_where_the_claim_would_have_won(
    store: HistoryStore,
) -> None:
    """The claim timed out: the commit makes it, as NEW or RETRY would have."""
    turn = [user("q1", "r1"), reply("a1", "r1")]
    assert await store.commit_turn("t", "r1", "x1", turn, answer=ANSWER, adopt=True)
    assert (await store.claim_request("t", "r1")).state is ClaimState.REPLAY
    # The claim that timed out runs late: the request is finished, nothing changes.
    assert (await store.claim_request("t", "r1", "x1")).state is ClaimState.REPLAY
    # An interrupted earlier attempt: its partial turn is replaced, not repeated.
    first = await store.claim_request("t", "r2")
    partial = [user("q2", "r2"), reply("half", "r2", interrupted=True)]
    assert await store.commit_turn("t", "r2", first.attempt_id, partial, answer=None)
    full = [user("q2", "r2"), reply("whole", "r2")]
    assert await store.commit_turn("t", "r2", "x2", full, answer=ANSWER, adopt=True)
    assert await contents(store, "t") == ["q1", "a1", "q2", "whole"]
    # Refused where the claim would not have won: finished, or another attempt streams.
    late = [user("q2", "r2"), reply("late", "r2")]
    assert not await store.commit_turn("t", "r2", "x3", late, answer=ANSWER, adopt=True)
    await store.claim_request("t", "r3")
    streaming = [user("q3", "r3"), reply("other", "r3")]
    with pytest.raises(LeaseHeld):  # its owner is alive: asked again later
        await store.commit_turn("t", "r3", "x4", streaming, answer=ANSWER, adopt=True)
    assert await contents(store, "t") == ["q1", "a1", "q2", "whole"]
    # Retried after landing: recorded once.
    assert await store.commit_turn("t", "r1", "x1", turn, answer=ANSWER, adopt=True, retry=True)
    assert await contents(store, "t") == ["q1", "a1", "q2", "whole"]


async def test_a_claim_the_store_lost_does_not_lose_the_turn(store: HistoryStore) -> None:
    """A failover promoted a replica the claim had not reached (Redis replicates
    asynchronously): no attempt of the request is known, so the commit makes the claim
    instead of being refused as superseded. A retry that claimed meanwhile still wins."""
    began = time.time()
    claim = await store.claim_request("t", "r1")
    await lose_claims(store, "t")
    turn = [user("q1", "r1"), reply("a1", "r1")]
    assert await store.commit_turn(
        "t", "r1", claim.attempt_id, turn, answer=ANSWER, started_at=began
    )
    assert (await store.claim_request("t", "r1")).state is ClaimState.REPLAY
    lost = await store.claim_request("t", "r2")
    await lose_claims(store, "t")
    retry = await store.claim_request("t", "r2")  # the engine's retry, after the failover
    late = [user("q2", "r2"), reply("late", "r2")]
    assert not await store.commit_turn("t", "r2", lost.attempt_id, late, answer=ANSWER)
    won = [user("q2", "r2"), reply("won", "r2")]
    assert await store.commit_turn("t", "r2", retry.attempt_id, won, answer=ANSWER)
    assert await contents(store, "t") == ["q1", "a1", "q2", "won"]


async def test_a_dead_attempts_lease_is_adopted_and_a_live_one_is_not(
    store: HistoryStore,
) -> None:
    """Replica A claimed and died mid-stream; B's claim timed out (unconfirmed)."""
    dead = await store.claim_request("t", "r1", "a-dead", lease_seconds=0.05)
    assert dead.state is ClaimState.NEW
    turn = [user("q", "r1"), reply("from B", "r1")]
    await asyncio.sleep(0.1)  # (the memory store's default clock is real time too)
    assert await store.commit_turn("t", "r1", "b-1", turn, answer=ANSWER, adopt=True)
    # A's late commit (it was alive after all) is refused: B took it over.
    late = [user("q", "r1"), reply("from A", "r1")]
    assert not await store.commit_turn("t", "r1", "a-dead", late, answer=ANSWER)
    assert await contents(store, "t") == ["q", "from B"]
    # Committing B's turn again (a retried call) records it once.
    assert await store.commit_turn("t", "r1", "b-1", turn, answer=ANSWER, adopt=True)
    assert await contents(store, "t") == ["q", "from B"]


async def test_a_superseded_attempt_never_adopts_back(store: HistoryStore) -> None:
    first = await store.claim_request("t", "r1", "x1")
    second = await store.claim_request("t", "r1", "x2", lease_seconds=0.05)
    assert second.state is ClaimState.TAKEOVER and second.previous_attempt_id == first.attempt_id
    await asyncio.sleep(0.1)  # x2's replica died
    turn = [user("q", "r1"), reply("a", "r1")]
    assert not await store.commit_turn("t", "r1", "x1", turn, answer=ANSWER, adopt=True)


async def test_claiming_twice_with_one_attempt_id_is_one_claim(store: HistoryStore) -> None:
    assert (await store.claim_request("t", "r1", "x1")).state is ClaimState.NEW
    assert (await store.claim_request("t", "r1", "x1")).state is ClaimState.NEW
    turn = [user("q", "r1"), reply("a", "r1")]
    assert await store.commit_turn("t", "r1", "x1", turn, answer=ANSWER)
    assert await store.commit_turn("t", "r1", "x1", turn, answer=ANSWER)  # once more: a no-op
    assert await contents(store, "t") == ["q", "a"]


async def test_the_claim_reports_leases_and_pending_spoken_text(store: HistoryStore) -> None:
    await store.push_pending("t", {"text": "Welcome!", "at": 1.0})
    first = await store.claim_request("t", "r1", "x1")
    assert (first.pending_spoken, first.others_in_flight) == (1, 0)
    await store.hold("t", "no-request-id", 5, holder="b", create=True)
    other = await store.claim_request("t", "r2", "x2")
    assert (other.pending_spoken, other.others_in_flight) == (1, 2)
    await store.release("t", "no-request-id")
    assert await store.commit_turn("t", "r1", "x1", [user("q", "r1")], answer=ANSWER)
    assert (await store.claim_request("t", "r3", "x3")).others_in_flight == 1  # x2
    # A refresh after the lease ended does not bring it back.
    await store.hold("t", "x1", 5, holder="a", create=False)
    assert (await store.claim_request("t", "r4", "x4")).others_in_flight == 2  # x2, x3


async def test_spoken_text_joins_at_once_only_when_no_reply_is_in_flight(
    store: HistoryStore,
) -> None:
    welcome = reply("Welcome! Are you calling about your card?")
    item = {"text": welcome.content, "at": 1.0}
    assert await store.add_spoken("t", welcome, item, after=None) is SpokenOutcome.APPENDED
    assert await contents(store, "t") == [welcome.content]
    second = reply("One more thing.")
    # The history moved on since it was read: nothing is written.
    assert await store.add_spoken("t", second, item, after="other") is SpokenOutcome.MOVED
    claim = await store.claim_request("t", "r1", "x1")
    outcome = await store.add_spoken("t", second, item, after=welcome.id)
    assert outcome is SpokenOutcome.PENDING  # a reply is in flight: it waits for it
    assert await store.take_pending("t") == [item]
    await store.release("t", claim.attempt_id)
    assert await store.add_spoken("t", second, item, after=welcome.id) is SpokenOutcome.APPENDED
    assert await contents(store, "t") == [welcome.content, second.content]


async def test_a_turn_settling_a_905_as_it_starts_is_not_the_reply_it_waits_for(
    store: HistoryStore,
) -> None:
    welcome = reply("Welcome! Are you calling about your card?")
    item = {"text": welcome.content, "at": 1.0}
    mine = await store.claim_request("t", "r1", "x1")  # the turn's claim made its lease
    outcome = await store.add_spoken("t", welcome, item, after=None, settling="x1")
    assert outcome is SpokenOutcome.APPENDED  # before this turn's user message
    assert await contents(store, "t") == [welcome.content]
    await store.claim_request("t", "r2", "x2")  # another reply in flight: it waits
    second = reply("One more thing.")
    outcome = await store.add_spoken("t", second, item, after=welcome.id, settling="x1")
    assert outcome is SpokenOutcome.PENDING
    assert await store.take_pending("t") == [item]
    await store.release("t", mine.attempt_id)
    assert await contents(store, "t") == [welcome.content]


async def test_seed_is_written_only_when_the_task_is_empty(store: HistoryStore) -> None:
    seed = [user("old q"), reply("old a")]
    assert await store.commit_turn("t", None, None, [user("q1")], answer=None, seed=seed)
    claim = await store.claim_request("t", "r2")
    again = [user("ignored seed")]
    assert await store.commit_turn(
        "t", "r2", claim.attempt_id, [user("q2", "r2")], answer=ANSWER, seed=again
    )
    assert await contents(store, "t") == ["old q", "old a", "q1", "q2"]


# Reading.


async def test_load_returns_the_newest_messages_oldest_first(store: HistoryStore) -> None:
    await store.append("t", [user(f"m{i}") for i in range(10)])
    history = await store.load("t", 3)
    assert [m.content for m in history.messages] == ["m7", "m8", "m9"]
    assert history.total_messages == 10 and history.summary is None
    assert len((await store.load("t", 50)).messages) == 10
    empty = await store.load("t", 0)
    assert empty.messages == [] and empty.total_messages == 10
    unknown = await store.load("nobody", 5)
    assert unknown.messages == [] and unknown.total_messages == 0


async def test_messages_roundtrip_with_their_bookkeeping(store: HistoryStore) -> None:
    message = StoredMessage(
        role="assistant",
        content=[{"type": "text", "text": "x"}, {"type": "meta", "tags": []}],
        tool_calls=[{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
        request_id="r1",
        created_at=1712345678.123456,
        tokens=42,
        source="context",
        heard_at=1712345680.5,
    )
    await store.append("t", [message])
    (loaded,) = (await store.load("t", 1)).messages
    assert loaded == message and loaded is not message


async def test_store_never_shares_message_objects(store: HistoryStore) -> None:
    message = user("original")
    await store.append("t", [message])
    message.content = "changed by the caller"
    loaded = (await store.load("t", 1)).messages[0]
    loaded.content = "changed by a reader"
    assert await contents(store, "t") == ["original"]


# Corrections and summaries.


async def test_update_message_replaces_content_by_id(store: HistoryStore) -> None:
    tool_calls = [{"id": "c1", "function": {"name": "f", "arguments": '{"content": 1}'}}]
    target = StoredMessage(
        role="assistant",
        content=[{"type": "text", "content": "nested"}],
        tool_calls=[*tool_calls, {"content": {"deep": ['"content":', "ends in \\"]}}],
        request_id="r1",
        interrupted=True,
        created_at=1712345678.987654,
        tokens=7,
    )
    await store.append("t", [target, *(user(f"later {i}") for i in range(40))])
    assert await store.update_message("t", target.id, content='said "this"', interrupted=False)

    history = await store.load("t", 100)
    updated = history.messages[0]
    assert (updated.content, updated.interrupted, updated.tokens) == ('said "this"', False, None)
    assert (updated.id, updated.request_id, updated.created_at) == (
        target.id,
        "r1",
        1712345678.987654,
    )
    assert updated.tool_calls == target.tool_calls and history.total_messages == 41
    assert not await store.update_message("t", "missing", content="x", interrupted=False)
    assert not await store.update_message("other", target.id, content="x", interrupted=False)


async def test_update_message_records_when_the_reply_was_heard(store: HistoryStore) -> None:
    first, second = reply("Sure, I can help."), reply("It is 21 degrees.")
    await store.append("t", [first, second])
    assert await store.update_message(
        "t", first.id, content=first.content, interrupted=False, heard_at=1712345678.25
    )
    parts = [{"type": "text", "text": "It is"}]
    assert await store.update_message(
        "t", second.id, content=parts, interrupted=True, heard_at=1712345679.5
    )
    loaded = (await store.load("t", 10)).messages
    assert [(m.content, m.interrupted, m.heard_at) for m in loaded] == [
        ("Sure, I can help.", False, 1712345678.25),
        (parts, True, 1712345679.5),
    ]
    parts[0]["text"] = "changed by the caller"
    assert (await store.load("t", 1)).messages[0].content == [{"type": "text", "text": "It is"}]
    # heard_at=None (the default) clears it.
    assert await store.update_message("t", first.id, content="Sure,", interrupted=True)
    assert (await store.load("t", 10)).messages[0].heard_at is None


async def test_redis_updates_a_message_stored_before_heard_at_existed(
    redis_store: RedisHistoryStore, redis_client: redis.Redis
) -> None:
    messages_key = redis_store.task_keys("t")[0]
    old = (
        b'{"id":"m1","request_id":"r1","role":"assistant","name":null,"tool_calls":null,'
        b'"tool_call_id":null,"created_at":1712345678.5,"source":"turn",'
        b'"content":"Sure, here is a story","interrupted":false,"tokens":9}'
    )
    await redis_client.rpush(messages_key, old)
    (loaded,) = (await redis_store.load("t", 1)).messages
    assert (loaded.content, loaded.heard_at, loaded.tokens) == ("Sure, here is a story", None, 9)
    assert await redis_store.update_message(
        "t", "m1", content="Sure,", interrupted=True, heard_at=1712345680.0
    )
    (loaded,) = (await redis_store.load("t", 1)).messages
    assert (loaded.id, loaded.request_id, loaded.created_at) == ("m1", "r1", 1712345678.5)
    assert (loaded.content, loaded.interrupted, loaded.tokens, loaded.heard_at) == (
        "Sure,",
        True,
        None,
        1712345680.0,
    )


async def test_set_summary_drops_everything_up_to_the_message(store: HistoryStore) -> None:
    messages = [user(f"m{i}") for i in range(6)]
    await store.append("t", messages)
    assert not await store.set_summary("t", "nothing", "missing")
    assert (await store.load("t", 10)).summary is None

    assert await store.set_summary("t", "first three", messages[2].id)
    history = await store.load("t", 10)
    assert [m.content for m in history.messages] == ["m3", "m4", "m5"]
    assert history.summary == "first three" and history.total_messages == 3

    assert await store.set_summary("t", "all of it", messages[5].id)
    history = await store.load("t", 10)
    assert history.messages == [] and history.summary == "all of it"


# Lifetime.


async def test_reset_forgets_history_summary_and_markers(store: HistoryStore) -> None:
    await commit(store, "t", "r1", "q")
    await store.set_summary("t", "s", (await store.load("t", 1)).messages[0].id)
    began = time.time()
    in_flight = await store.claim_request("t", "r2")
    await store.reset("t")

    history = await store.load("t", 10)
    assert history.messages == [] and history.summary is None and history.total_messages == 0
    assert (await store.claim_request("t", "r1")).state is ClaimState.NEW
    # An attempt claimed before the reset cannot write into the fresh task.
    late = [user("x", "r2")]
    assert not await store.commit_turn(
        "t", "r2", in_flight.attempt_id, late, answer=None, started_at=began
    )
    assert not await store.commit_turn(
        "t", "r2", in_flight.attempt_id, late, answer=None, started_at=began, adopt=True
    )
    # One that began after it can (its claim lost, or timed out and adopted). The store
    # keeps times in milliseconds and a reset wins a tie: "after" is a millisecond later.
    after = time.time() + 0.01
    assert await store.commit_turn("t", "r2", "y", late, answer=None, started_at=after)
    assert await contents(store, "t") == ["x"]


async def test_erasure_refuses_every_write_of_attempts_begun_before_it(
    store: HistoryStore,
) -> None:
    await commit(store, "t", "r1", "q")
    began = time.time()
    in_flight = await store.claim_request("t", "r2")
    await store.erase("t", time.time())
    assert (await store.load("t", 10)).total_messages == 0

    # The turn that began before the erasure: its commit (and a retry) write nothing.
    turn = [user("old", "r2"), reply("re:old", "r2")]
    for retry in (False, True):
        with pytest.raises(TaskErased):
            await store.commit_turn(
                "t",
                "r2",
                in_flight.attempt_id,
                turn,
                answer=ANSWER,
                retry=retry,
                seed=[user("seed")],
                started_at=began,
            )
    with pytest.raises(TaskErased):  # without a request id alike
        await store.commit_turn("t", None, None, [user("o")], answer=ANSWER, started_at=began)
    spoken = StoredMessage(role="assistant", content="heard", source="spoken")
    outcome = await store.add_spoken("t", spoken, {"text": "heard"}, after=None, started_at=began)
    assert outcome is SpokenOutcome.ERASED
    assert not await store.push_pending("t", {"text": "heard"}, started_at=began)
    assert (await store.load("t", 10)).total_messages == 0
    assert await store.take_pending("t") == []

    # A turn that begins after the erasure is recorded: the task id lives on.
    await asyncio.sleep(0.002)
    after = time.time()
    claim = await store.claim_request("t", "r3")
    new = [user("new", "r3"), reply("re:new", "r3")]
    assert await store.commit_turn(
        "t", "r3", claim.attempt_id, new, answer=ANSWER, started_at=after
    )
    assert await store.push_pending("t", {"text": "x"}, started_at=after)
    assert await contents(store, "t") == ["new", "re:new"]


async def test_a_turn_starts_with_claim_history_and_meta_info_at_once(
    store: HistoryStore,
) -> None:
    await commit(store, "t", "r1", "q1")
    await store.push_meta("t", {"n": 1})
    await store.push_pending("t", {"text": "heard"})
    # No request id: nothing claimed; the meta.info stays queued unless asked for.
    start = await store.begin_turn("t", None, "a0", limit=1)
    assert start.claim is None and start.meta == []
    assert [m.content for m in start.history.messages] == ["re:q1"]
    assert start.history.total_messages == 2
    # A new request id: claimed (with the task's in-flight facts), meta.info taken.
    start = await store.begin_turn("t", "r2", "a1", limit=10, take_meta=True)
    assert start.claim is not None and start.claim.state is ClaimState.NEW
    assert (start.claim.attempt_id, start.claim.pending_spoken) == ("a1", 1)
    assert [m.content for m in start.history.messages] == ["q1", "re:q1"]
    assert start.meta == [{"n": 1}] and await store.take_meta("t") == []
    # The same request again: taken over; a finished one: replayed.
    start = await store.begin_turn("t", "r2", "a2", limit=10)
    assert start.claim is not None and start.claim.state is ClaimState.TAKEOVER
    assert start.claim.previous_attempt_id == "a1"
    start = await store.begin_turn("t", "r1", "a3", limit=0)
    assert start.claim is not None and start.claim.state is ClaimState.REPLAY
    assert start.claim.answer == ANSWER and start.history.messages == []
    # The claim is the claim: only its attempt commits.
    turn = [user("q2", "r2"), reply("re:q2", "r2")]
    assert not await store.commit_turn("t", "r2", "a1", turn, answer=ANSWER)
    assert await store.commit_turn("t", "r2", "a2", turn, answer=ANSWER)
    empty = await store.begin_turn("nothing-here", "r1", "a4", limit=10, take_meta=True)
    assert empty.history.messages == [] and empty.history.summary is None and empty.meta == []


async def test_queued_meta_info_lives_and_dies_with_its_task(store: HistoryStore) -> None:
    await store.push_meta("t", {"n": 1})
    await store.push_meta("t", {"n": 2})
    await store.push_meta("other", {"n": 3})
    assert await store.take_meta("t") == [{"n": 1}, {"n": 2}]
    assert await store.take_meta("t") == []
    await store.push_meta("t", {"n": 4})
    await store.reset("t")
    assert await store.take_meta("t") == []
    await store.push_meta("t", {"n": 5})
    await store.erase("t", time.time())
    assert await store.take_meta("t") == []
    await store.push_meta("t", {"n": 6})  # queued after the erasure: for the next reply
    assert await store.take_meta("t") == [{"n": 6}]
    assert await store.take_meta("other") == [{"n": 3}]


async def test_redis_keys_of_a_task_share_one_slot_whatever_its_id(
    redis_store: RedisHistoryStore,
) -> None:
    prefix = redis_store.prefix
    # The usual ids keep their layout: the task key verbatim in the hash tag.
    assert redis_store.task_keys("1400000001:T-1")[0] == f"{prefix}{{1400000001:T-1}}:msgs"
    for task_id in ["T-1", "}x", "a{b}", "{}", "}", "%", "a%7Db", "任务"]:
        keys = [
            *redis_store.task_keys(task_id),
            redis_store.live_key(task_id),
            redis_store.pending_key(task_id),
            redis_store.meta_queue_key(task_id),
            redis_store.erased_key(task_id),
        ]
        tags = {key[len(prefix) :].split("}", 1)[0] for key in keys}
        assert len(tags) == 1 and tags != {"{"}, (task_id, keys)  # one non-empty tag
        assert len({key_slot(key.encode()) for key in keys}) == 1, task_id


async def test_find_task_keys_with_braces_in_the_id(store: HistoryStore) -> None:
    await commit(store, "app1:}T{", "r1", "q")
    await commit(store, "app1:%7DT%7B", "r1", "q")
    assert await store.find_task_keys("}T{") == ["app1:}T{"]
    assert await store.find_task_keys("%7DT%7B") == ["app1:%7DT%7B"]


async def test_expire_zero_forgets_the_task(store: HistoryStore) -> None:
    await commit(store, "t", "r1", "q")
    await store.expire("t", 0)
    assert (await store.load("t", 10)).total_messages == 0
    assert (await store.claim_request("t", "r1")).state is ClaimState.NEW


async def test_tasks_are_isolated(store: HistoryStore) -> None:
    # Braces would end (or empty) a hash tag; "%7Da" is what "}a" escapes to.
    task_ids = ["a", "a}", "{a}", "}a", "%7Da", "{}", "a:msgs", "b"]
    for task_id in task_ids:
        await commit(store, task_id, "same-request", f"from {task_id}")
    await store.set_summary("b", "b only", (await store.load("b", 1)).messages[0].id)
    await store.reset("a:msgs")
    for task_id in ["a", "a}", "{a}", "}a", "%7Da", "{}"]:
        history = await store.load(task_id, 10)
        assert [m.content for m in history.messages] == [f"from {task_id}", f"re:from {task_id}"]
        assert history.summary is None
        assert (await store.claim_request(task_id, "same-request")).state is ClaimState.REPLAY
    assert (await store.claim_request("a:msgs", "same-request")).state is ClaimState.NEW


async def test_chinese_text_roundtrip(store: HistoryStore) -> None:
    task_id, request_id = "任务-42", "请求-1"
    claim = await store.claim_request(task_id, request_id)
    answer = StoredAnswer(content="您好，我是小助手。", model="模型")
    turn = [user("你好，请问今天天气怎么样？", request_id), reply("今天晴", request_id)]
    assert await store.commit_turn(task_id, request_id, claim.attempt_id, turn, answer=answer)
    corrected = "今天晴，气温“二十度”"
    assert await store.update_message(task_id, turn[1].id, content=corrected, interrupted=True)
    assert await store.set_summary(task_id, "用户问了天气。", turn[0].id)

    history = await store.load(task_id, 10)
    assert [m.content for m in history.messages] == [corrected]
    assert history.summary == "用户问了天气。"
    replay = await store.claim_request(task_id, request_id)
    assert replay.state is ClaimState.REPLAY and replay.answer == answer


# Concurrency.


async def test_concurrent_commits_lose_nothing(store: HistoryStore) -> None:
    async def one_request(n: int) -> None:
        await commit(store, "busy", f"r{n}", f"q{n}")

    await asyncio.gather(*(one_request(n) for n in range(50)))
    history = await store.load("busy", 1000)
    assert history.total_messages == 100
    odd, even = history.messages[::2], history.messages[1::2]
    pairs = [(a.content, b.content) for a, b in zip(odd, even, strict=True)]
    assert sorted(pairs) == sorted((f"q{n}", f"re:q{n}") for n in range(50))


async def test_only_the_latest_of_concurrent_claims_commits(store: HistoryStore) -> None:
    claims = await asyncio.gather(*(store.claim_request("t", "r1") for _ in range(20)))
    assert sum(claim.state is ClaimState.NEW for claim in claims) == 1
    results = await asyncio.gather(
        *(
            store.commit_turn("t", "r1", c.attempt_id, [user(str(i), "r1")], answer=ANSWER)
            for i, c in enumerate(claims)
        )
    )
    assert sum(results) == 1
    assert (await store.load("t", 10)).total_messages == 1


# Implementation specifics: TTLs.


async def test_redis_ttl_is_set_and_refreshed_on_every_key(
    redis_store: RedisHistoryStore, redis_client: redis.Redis
) -> None:
    keys = redis_store.task_keys("t")
    await commit(redis_store, "t", "r1", "q")
    await redis_store.set_summary("t", "s", (await redis_store.load("t", 1)).messages[0].id)
    await redis_store.append("t", [user("more")])
    for key in keys:
        assert 3590 <= await redis_client.ttl(key) <= 3600

    await redis_store.expire("t", 5)
    for key in keys:
        assert 0 < await redis_client.ttl(key) <= 5
    await redis_store.claim_request("t", "r2")  # any write restarts the full TTL
    for key in keys:
        assert await redis_client.ttl(key) > 3500


async def test_memory_ttl_runs_from_the_last_write() -> None:
    clock = FakeClock()
    store = MemoryHistoryStore(ttl_seconds=10, clock=clock)
    await store.append("t", [user("q")])
    clock.advance(9)
    await store.load("t", 1)  # reading does not extend the TTL
    await store.append("t", [user("q2")])
    clock.advance(9)
    assert (await store.load("t", 10)).total_messages == 2
    await store.expire("t", 3)
    clock.advance(3)
    assert (await store.load("t", 10)).total_messages == 0


async def test_memory_store_is_bounded() -> None:
    clock = FakeClock()
    store = MemoryHistoryStore(ttl_seconds=10, max_tasks=3, clock=clock)
    for task_id in ["a", "b", "c"]:
        await store.append(task_id, [user(task_id)])
    await store.load("a", 1)  # "b" is now the least recently used
    await store.append("d", [user("d")])
    assert store.task_count == 3
    assert (await store.load("b", 1)).total_messages == 0
    assert (await store.load("a", 1)).total_messages == 1

    clock.advance(60)  # expired tasks are swept even if nobody reads them again
    await store.append("e", [user("e")])
    assert store.task_count == 1


async def test_pending_items_are_taken_once_in_order(store) -> None:
    task_id = f"pending-{uuid.uuid4().hex[:8]}"
    assert await store.take_pending(task_id) == []
    await store.push_pending(task_id, {"text": "你好", "at": 1})
    await store.push_pending(task_id, {"text": "second", "at": 2})
    assert await store.take_pending(task_id) == [
        {"text": "你好", "at": 1},
        {"text": "second", "at": 2},
    ]
    assert await store.take_pending(task_id) == []
    await store.push_pending(task_id, {"text": "x"})
    await store.reset(task_id)
    assert await store.take_pending(task_id) == []


async def test_mark_once_deduplicates(store) -> None:
    key = f"event-{uuid.uuid4().hex[:8]}"
    assert await store.mark_once(key, 60) is True
    assert await store.mark_once(key, 60) is False
    assert await store.mark_once(key + "-other", 60) is True


async def test_hit_counts_within_a_window(store) -> None:
    key = f"rate-{uuid.uuid4().hex[:8]}"
    assert [await store.hit(key, 60) for _ in range(3)] == [1, 2, 3]
    assert await store.hit(key + "-other", 60) == 1


# Finding a task by the engine's bare TaskId (the admin API).


async def test_find_task_keys_lists_the_apps_that_have_the_task(store: HistoryStore) -> None:
    await commit(store, "app1:T-1", "r1", "q")
    await commit(store, "app2:T-1", "r1", "q")
    await commit(store, "T-1", "r1", "q")  # an engine that names no app
    await commit(store, "app1:T-10", "r1", "q")  # a longer id with the same start
    await store.push_meta("app3:T-1", {"queued": "before any turn"})
    await store.claim_request("app4:T-1", "r1")  # a turn in flight counts
    assert await store.find_task_keys("T-1") == ["T-1", "app1:T-1", "app2:T-1", "app4:T-1"]
    assert await store.find_task_keys("T-10") == ["app1:T-10"]
    assert await store.find_task_keys("T-2") == []
    assert await store.find_task_keys("T-*") == []  # a pattern is matched literally
