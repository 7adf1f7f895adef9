"""Building the upstream prompt from an engine request and the task's stored history."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.context.assembly import SUMMARY_PREFIX, assemble, split_request
from proxy.context.budget import TokenCounter
from proxy.context.history import StoredMessage, TaskHistory
from proxy.settings import HistoryPolicy

SYSTEM = {"role": "system", "content": "You are a concierge."}
PROMPT = {"role": "user", "content": "The caller is a VIP."}  # an engine UserMessage


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": text}


def stored(*messages: dict[str, Any], interrupted_last: bool = False) -> TaskHistory:
    rows = [StoredMessage(role=m["role"], content=m["content"]) for m in messages]
    if interrupted_last:
        rows[-1].interrupted = True
    return TaskHistory(messages=rows, total_messages=len(rows))


@pytest.fixture(scope="module")
def counter() -> TokenCounter:
    return TokenCounter()


def build(messages: list[dict[str, Any]], history: TaskHistory, counter: TokenCounter, **policy):
    return assemble(
        split_request(messages),
        history,
        policy=HistoryPolicy(**policy),
        counter=counter,
        request_id="req-9",
    )


def test_split_the_engine_request() -> None:
    parts = split_request(
        [SYSTEM, PROMPT, user("Hi"), assistant("Hello!"), PROMPT, user("Book a table")]
    )
    assert parts.system == [SYSTEM]
    assert parts.earlier == [PROMPT, user("Hi"), assistant("Hello!")]
    assert parts.prompt_tail == [PROMPT]
    assert parts.new_turn == [user("Book a table")]


def test_split_a_tool_result_turn_and_a_bare_request() -> None:
    call = {"role": "assistant", "content": None, "tool_calls": [{"id": "c"}]}
    result = {"role": "tool", "tool_call_id": "c", "content": "18 C"}
    parts = split_request([SYSTEM, user("Weather?"), call, result])
    assert (parts.earlier, parts.prompt_tail, parts.new_turn) == (
        [user("Weather?"), call],
        [],
        [result],
    )
    empty = split_request([])
    assert (empty.system, empty.earlier, empty.prompt_tail, empty.new_turn) == ([], [], [], [])


def test_an_empty_store_is_seeded_once_from_the_request(counter: TokenCounter) -> None:
    request = [SYSTEM, user("Hi"), assistant("Hello!"), user("Book a table")]
    prompt = build(request, TaskHistory(messages=[]), counter)
    assert prompt.messages == request
    assert [(m.role, m.content, m.source, m.request_id) for m in prompt.seed or []] == [
        ("user", "Hi", "seed", None),
        ("assistant", "Hello!", "seed", None),
    ]
    assert [(m.role, m.content, m.request_id) for m in prompt.new_turn] == [
        ("user", "Book a table", "req-9")
    ]


def test_with_history_the_store_is_the_truth(counter: TokenCounter) -> None:
    # The engine re-sends the full reply; the user heard only "Once upon" of it.
    history = stored(user("Tell a story"), assistant("Once upon"), interrupted_last=True)
    request = [
        SYSTEM,
        PROMPT,
        user("Tell a story"),
        assistant("Once upon a time there was a sea."),
        user("What did you say?"),
    ]
    prompt = build(request, history, counter)
    assert prompt.seed is None
    assert prompt.messages == [
        SYSTEM,
        PROMPT,  # before the first repeated round: a prompt message, kept in place
        user("Tell a story"),
        assistant("Once upon"),
        user("What did you say?"),
    ]
    assert [m.content for m in prompt.history_used] == ["Tell a story", "Once upon"]


def test_the_summary_is_pinned_after_the_system_prompt(counter: TokenCounter) -> None:
    history = stored(user("Newest question"), assistant("Newest answer"))
    history.summary = "They booked a table for two."
    prompt = build([SYSTEM, user("And dessert?")], history, counter)
    assert prompt.messages == [
        SYSTEM,
        {"role": "system", "content": SUMMARY_PREFIX + "They booked a table for two."},
        user("Newest question"),
        assistant("Newest answer"),
        user("And dessert?"),
    ]


def test_max_turns_keeps_the_newest_whole_turns(counter: TokenCounter) -> None:
    turns = [m for i in range(5) for m in (user(f"q{i}"), assistant(f"a{i}"))]
    prompt = build([SYSTEM, user("q5")], stored(*turns), counter, max_turns=2)
    kept = [user("q3"), assistant("a3"), user("q4"), assistant("a4")]
    assert prompt.messages == [SYSTEM, *kept, user("q5")]
    unlimited = build([SYSTEM, user("q5")], stored(*turns), counter, max_turns=0)
    assert len(unlimited.messages) == 1 + len(turns) + 1
