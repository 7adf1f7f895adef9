"""The 905 reconciler on its own: which stored reply a 905 belongs to, and what it becomes.

The engine's times (``at``) are plain numbers here: only their order matters.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from proxy.context.history import StoredMessage
from proxy.context.memory_store import MemoryHistoryStore
from proxy.voice.spoken import SpokenTextReconciler

FIRST = "Sure, I can help you with your booking today."
SECOND = "Sure, here is a long story about the sea."


def user(text: str) -> StoredMessage:
    return StoredMessage(role="user", content=text)


def reply(text: str, *, interrupted: bool = False) -> StoredMessage:
    return StoredMessage(role="assistant", content=text, interrupted=interrupted)


@pytest.fixture
def store() -> MemoryHistoryStore:
    return MemoryHistoryStore()


@pytest.fixture
async def spoken(store: MemoryHistoryStore):
    reconciler = SpokenTextReconciler(store, None, grace_seconds=0.05)
    yield reconciler
    await reconciler.close()


STREAMING = "attempt-streaming"


async def streaming(store, task: str) -> None:
    """A reply of the task is in flight (its replica holds the lease)."""
    await store.hold(task, STREAMING, 5.0, holder="replica-a", create=True)


async def write_turn(store, spoken, task: str, messages: list[StoredMessage]) -> None:
    """As ``TurnWriter`` does: waiting 905s are folded in, then the turn is stored (and
    its lease ends)."""
    messages = await spoken.before_commit(task, messages)
    assert await store.commit_turn(task, None, STREAMING, messages, answer=None)


async def stored(store, task: str) -> list[tuple[str, object, bool]]:
    history = await store.load(task, 100)
    return [(m.role, m.content, m.interrupted) for m in history.messages]


async def test_a_heard_reply_is_never_corrected_by_the_next_rounds_905(store, spoken) -> None:
    await write_turn(store, spoken, "t", [user("Can you help me?"), reply(FIRST)])
    assert await spoken.on_spoken("t", FIRST, at=10.0) == "unchanged"
    # The next reply, cut short after "Sure, ", is still streaming: its 905 comes first.
    await streaming(store, "t")
    assert await spoken.on_spoken("t", "Sure, ", at=20.0) == "pending"
    assert (await stored(store, "t"))[-1] == ("assistant", FIRST, False)
    await write_turn(
        store, spoken, "t", [user("Tell me a story."), reply("Sure, here is", interrupted=True)]
    )
    assert await stored(store, "t") == [
        ("user", "Can you help me?", False),
        ("assistant", FIRST, False),
        ("user", "Tell me a story.", False),
        ("assistant", "Sure, ", True),
    ]
    await asyncio.sleep(0.1)  # past the grace: nothing was left to add
    assert len(await stored(store, "t")) == 4 and spoken.appended == 0


async def test_a_905_delivered_late_settles_its_own_older_reply(store, spoken) -> None:
    await write_turn(store, spoken, "t", [user("a"), reply(FIRST)])
    await write_turn(store, spoken, "t", [user("b"), reply(SECOND)])
    assert await spoken.on_spoken("t", "Sure, here is", at=20.0) == "corrected"
    # The first round's 905, retried by the engine, arrives after the second's.
    assert await spoken.on_spoken("t", "Sure, I can", at=10.0) == "corrected"
    assert [m[1:] for m in await stored(store, "t") if m[0] == "assistant"] == [
        ("Sure, I can", True),
        ("Sure, here is", True),
    ]
    # Delivered late before the newer reply's 905: that reply does not begin with it.
    await write_turn(store, spoken, "u", [user("a"), reply(FIRST)])
    await write_turn(store, spoken, "u", [user("b"), reply("No, sorry.")])
    assert await spoken.on_spoken("u", "Sure, I can", at=10.0) == "corrected"
    assert [m[1] for m in await stored(store, "u") if m[0] == "assistant"] == [
        "Sure, I can",
        "No, sorry.",
    ]


async def test_the_same_905_twice_changes_nothing_more(store, spoken) -> None:
    await write_turn(store, spoken, "t", [user("a"), reply(SECOND)])
    assert await spoken.on_spoken("t", "Sure, here", at=10.0) == "corrected"
    assert await spoken.on_spoken("t", "Sure, here", at=10.0) == "unchanged"
    await asyncio.sleep(0.1)
    assert await stored(store, "t") == [("user", "a", False), ("assistant", "Sure, here", True)]
    assert spoken.corrected == 1 and spoken.appended == 0


async def test_text_the_proxy_never_generated_is_added_once(store, spoken) -> None:
    await write_turn(store, spoken, "t", [user("a"), reply(FIRST)])
    assert await spoken.on_spoken("t", FIRST, at=10.0) == "unchanged"
    # No reply is in flight: it joins the history at once.
    assert await spoken.on_spoken("t", "Are you still there?", at=20.0) == "appended"
    assert (await stored(store, "t"))[-1] == ("assistant", "Are you still there?", False)
    assert await spoken.on_spoken("t", "Are you still there?", at=20.0) == "unchanged"
    await asyncio.sleep(0.1)
    assert len(await stored(store, "t")) == 3


# A tool turn: a filler, the tool call and result, then the answer, heard as one reply.

FILLER = "Let me check."
ANSWER = "Sorry, the order system is not answering right now."
CALLS = [{"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}]


def tool_turn() -> list[StoredMessage]:
    return [
        user("where is order 42?"),
        StoredMessage(role="assistant", content=FILLER, tool_calls=CALLS),
        StoredMessage(role="tool", content="timed out", tool_call_id="c1"),
        reply(ANSWER),
    ]


async def said(store, task: str) -> list[tuple[object, bool]]:
    return [(m[1], m[2]) for m in await stored(store, task) if m[0] == "assistant"]


@pytest.mark.parametrize(
    ("heard", "expected"),
    [
        (FILLER + ANSWER, [(FILLER, False), (ANSWER, False)]),
        (FILLER + " " + ANSWER, [(FILLER, False), (ANSWER, False)]),
        ("Let me check. Sorry, the order", [(FILLER, False), ("Sorry, the order", True)]),
        ("Let me check Sorry", [(FILLER, False), ("Sorry,", True)]),
        ("Let me check.", [(FILLER, False), ("", True)]),
        ("Let me", [("Let me", True), ("", True)]),
    ],
)
async def test_a_tool_turn_is_heard_as_one_reply(store, spoken, heard, expected) -> None:
    await write_turn(store, spoken, "t", tool_turn())
    outcome = await spoken.on_spoken("t", heard, at=10.0)
    assert outcome == ("unchanged" if heard.endswith(ANSWER) else "corrected")
    await asyncio.sleep(0.1)  # past the grace: nothing was added
    assert await said(store, "t") == expected
    history = (await store.load("t", 10)).messages
    assert history[1].tool_calls == CALLS and history[2].role == "tool"
    # Settled: the next round's 905 does not touch it.
    await streaming(store, "t")
    assert await spoken.on_spoken("t", "Let me", at=20.0) == "pending"
    assert await said(store, "t") == expected


async def test_a_tool_turns_905_that_came_first_is_applied_when_it_is_written(
    store, spoken
) -> None:
    await streaming(store, "t")
    assert await spoken.on_spoken("t", "Let me check. Sorry, the", at=10.0) == "pending"
    turn = tool_turn()
    turn[0].created_at = 5.0  # the turn started before the 905
    await write_turn(store, spoken, "t", turn)
    assert await said(store, "t") == [(FILLER, False), ("Sorry, the", True)]
    await asyncio.sleep(0.1)
    assert len(await stored(store, "t")) == 4


async def test_a_welcome_905_joins_at_once_before_the_first_turn(store, spoken) -> None:
    assert await spoken.on_spoken("t", "Hi! Are you calling about your card?", at=1.0) == (
        "appended"
    )
    await write_turn(store, spoken, "t", [user("Yes."), reply("Great, let me help.")])
    assert [m[1] for m in await stored(store, "t")] == [
        "Hi! Are you calling about your card?",
        "Yes.",
        "Great, let me help.",
    ]


async def test_a_905_matching_nothing_while_a_reply_streams_goes_in_its_place(
    store, spoken
) -> None:
    await streaming(store, "t")
    assert await spoken.on_spoken("t", "Please hold the line.", at=5.0) == "pending"
    turn = [user("What now?"), reply("Now we wait.")]
    turn[0].created_at = 6.0  # the turn started after the push text was heard
    await write_turn(store, spoken, "t", turn)
    assert [m[1] for m in await stored(store, "t")] == [
        "Please hold the line.",
        "What now?",
        "Now we wait.",
    ]


async def test_a_905_left_waiting_by_a_dead_reply_is_settled_when_asked(store, spoken) -> None:
    await store.hold("t", "dies", 0.05, holder="replica-a", create=True)
    assert await spoken.on_spoken("t", "Hello there.", at=5.0) == "pending"
    await asyncio.sleep(0.06)  # the replica died: its lease ended, nobody commits
    await spoken.settle("t")
    assert [m[1] for m in await stored(store, "t")] == ["Hello there."]


async def test_chinese_reply_cut_after_the_filler(store, spoken) -> None:
    turn = [
        user("我的订单在哪里？"),
        StoredMessage(role="assistant", content="请稍等，我查一下。", tool_calls=CALLS),
        StoredMessage(role="tool", content="{}", tool_call_id="c1"),
        reply("您的订单已经发货，预计明天送达。"),
    ]
    await write_turn(store, spoken, "t", turn)
    assert await spoken.on_spoken("t", "请稍等，我查一下。您的订单已经", at=10.0) == "corrected"
    assert await said(store, "t") == [("请稍等，我查一下。", False), ("您的订单已经", True)]


# The engine gave up on a round (908 llm_error 30200): nothing of its reply was heard.


async def test_a_reply_written_after_the_engine_gave_up_is_emptied(store, spoken) -> None:
    turn = [user("Hello?"), reply("A reply streamed after the engine gave up.")]
    turn[0].created_at = 10.0
    await write_turn(store, spoken, "t", turn)
    assert await spoken.on_gave_up("t", at=12.0) == "corrected"
    assert await stored(store, "t") == [("user", "Hello?", False), ("assistant", "", True)]
    # A 908 of a round that had not started yet changes nothing written.
    assert await spoken.on_gave_up("t", at=9.0) == "pending"
    await spoken.settle("t")
    assert await stored(store, "t") == [("user", "Hello?", False), ("assistant", "", True)]


async def test_a_reply_still_in_flight_when_the_engine_gave_up_is_emptied_at_its_commit(
    store, spoken
) -> None:
    await write_turn(store, spoken, "t", [user("first"), reply("heard")])
    await spoken.on_spoken("t", "heard", at=5.0)
    await streaming(store, "t")
    assert await spoken.on_gave_up("t", at=12.0) == "pending"
    turn = [user("second"), reply("too late", interrupted=True)]
    turn[0].created_at = 10.0
    await write_turn(store, spoken, "t", turn)
    assert await stored(store, "t") == [
        ("user", "first", False),
        ("assistant", "heard", False),
        ("user", "second", False),
        ("assistant", "", True),
    ]


# A turn cut short before any text was counted as sent: the engine heard some after all.


def turn_of(request_id: str, text: str, at: float) -> StoredMessage:
    message = StoredMessage(role="user", content=text, request_id=request_id)
    message.created_at = at
    return message


async def test_a_905_for_a_turn_stored_without_a_reply_becomes_its_reply(store, spoken) -> None:
    await write_turn(store, spoken, "t", [turn_of("r1", "Tell me.", 10.0)])
    assert await spoken.on_spoken("t", "Well, the", at=12.0) == "appended"
    history = (await store.load("t", 10)).messages
    assert [(m.role, m.content, m.request_id, m.interrupted) for m in history] == [
        ("user", "Tell me.", "r1", False),
        ("assistant", "Well, the", "r1", True),
    ]


async def test_a_905_waiting_for_a_turn_cut_before_any_text_becomes_its_reply(
    store, spoken
) -> None:
    await streaming(store, "t")
    assert await spoken.on_spoken("t", "Well, the", at=12.0) == "pending"
    messages = await spoken.before_commit("t", [turn_of("r1", "Tell me.", 10.0)], interrupted=True)
    assert [(m.role, m.content, m.request_id, m.interrupted) for m in messages] == [
        ("user", "Tell me.", "r1", False),
        ("assistant", "Well, the", "r1", True),
    ]


async def test_a_905_received_before_an_erasure_is_dropped_after_it(store, spoken) -> None:
    await write_turn(store, spoken, "t", [user("hi"), reply(FIRST)])
    received = time.time()
    await store.erase("t", time.time())
    # Applied after the erasure (a retry off the callback's path): the task stays erased.
    assert await spoken.on_spoken("t", "Welcome back.", at=30.0, received_at=received) == "erased"
    await streaming(store, "t")  # a reply in flight: it would have waited in the queue
    assert await spoken.on_spoken("t", "Welcome back.", at=31.0, received_at=received) == "erased"
    assert await spoken.on_gave_up("t", at=32.0, received_at=received) == "erased"
    assert await stored(store, "t") == [] and await store.take_pending("t") == []
    # One received after the erasure is the new conversation's.
    assert await spoken.on_spoken("t", "Hello again.", at=40.0) == "pending"
