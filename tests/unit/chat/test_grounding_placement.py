"""Where retrieved knowledge goes: after the history, before the new turn, kept with it."""

from __future__ import annotations

from proxy.chat.grounding import ground, inject
from proxy.context.budget import group_turns
from proxy.context.history import StoredMessage

SYSTEM = {"role": "system", "content": "You are a shop assistant."}
KNOWLEDGE = "Relevant knowledge:\n[1] Returns: within 30 days.\n[2] Hours: nine to five."


def test_knowledge_goes_before_the_new_turn_not_into_the_system_prompt() -> None:
    messages = [
        SYSTEM,
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "returns?"},
    ]
    placed = inject(messages, KNOWLEDGE)
    assert placed == [*messages[:3], {"role": "system", "content": KNOWLEDGE}, messages[3]]


def test_tool_results_keep_their_place_after_their_call() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    messages = [
        SYSTEM,
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ]
    assert inject(messages, KNOWLEDGE) == [*messages, {"role": "system", "content": KNOWLEDGE}]


def test_knowledge_is_stored_with_its_turn_and_not_repeated() -> None:
    turn = [StoredMessage(role="user", content="returns?", request_id="r1")]
    messages = [SYSTEM, {"role": "user", "content": "returns?"}]
    placed = ground(messages, KNOWLEDGE, turn, "r1")
    assert [m.role for m in turn] == ["system", "user"]
    assert (turn[0].source, turn[0].request_id, turn[0].content) == ("retrieval", "r1", KNOWLEDGE)
    assert placed[1] == {"role": "system", "content": KNOWLEDGE}
    # The next turn retrieves one chunk again (ranked differently) and one new one.
    following = [
        *placed,
        {"role": "assistant", "content": "Thirty days."},
        {"role": "user", "content": "and hours?"},
    ]
    again = "Relevant knowledge:\n[1] Hours: nine to five.\n[2] Parking: free."
    next_turn = [StoredMessage(role="user", content="and hours?")]
    placed = ground(following, again, next_turn, None)
    assert placed[-2] == {"role": "system", "content": "Relevant knowledge:\n[2] Parking: free."}
    # Nothing new at all: nothing added, nothing stored.
    last_turn = [StoredMessage(role="user", content="thanks")]
    assert ground(placed, again, last_turn, None) == placed
    assert [m.role for m in last_turn] == ["user"]


def test_the_knowledge_of_a_turn_belongs_to_that_turn_when_trimming() -> None:
    messages = [
        StoredMessage(role="user", content="a"),
        StoredMessage(role="assistant", content="A"),
        StoredMessage(role="system", content=KNOWLEDGE, source="retrieval"),
        StoredMessage(role="user", content="b"),
        StoredMessage(role="assistant", content="B"),
    ]
    assert [[m.content for m in t] for t in group_turns(messages)] == [
        ["a", "A"],
        [KNOWLEDGE, "b", "B"],
    ]
