"""A retried turn is found only when its reply was never completed."""

from __future__ import annotations

from proxy.chat.retried_turn import retried_turn, take_retried_turn
from proxy.context.history import StoredMessage, TaskHistory


def history(*messages: StoredMessage) -> TaskHistory:
    return TaskHistory(list(messages), total_messages=len(messages))


def user(text: str, source: str = "turn") -> StoredMessage:
    return StoredMessage(role="user", content=text, source=source)


def reply(text: str, *, interrupted: bool = False) -> StoredMessage:
    return StoredMessage(role="assistant", content=text, interrupted=interrupted)


NEW = [{"role": "user", "content": "What is the weather?"}]


def test_a_turn_left_before_its_reply_is_retried() -> None:
    stored = history(user("hi"), reply("Hello!"), user("What is the weather?"))
    assert retried_turn(stored, NEW) == 2


def test_a_reply_interrupted_before_any_text_counts_as_never_completed() -> None:
    stored = history(user("What is the weather?"), reply("", interrupted=True))
    assert retried_turn(stored, NEW) == 0


def test_an_answered_turn_said_again_is_a_new_turn() -> None:
    stored = history(user("What is the weather?"), reply("Sunny."))
    assert retried_turn(stored, NEW) is None


def test_a_reply_cut_after_some_words_was_heard() -> None:
    stored = history(user("What is the weather?"), reply("It is", interrupted=True))
    assert retried_turn(stored, NEW) is None


def test_other_text_is_a_new_turn() -> None:
    stored = history(user("What time is it?"))
    assert retried_turn(stored, NEW) is None


def test_operator_context_and_tool_steps_are_not_a_retry() -> None:
    assert retried_turn(history(user("What is the weather?", source="context")), NEW) is None
    calls = [{"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{}"}}]
    steps = history(
        user("What is the weather?"),
        StoredMessage(role="assistant", content=None, tool_calls=calls),
        StoredMessage(role="tool", content="{}", tool_call_id="c1"),
    )
    assert retried_turn(steps, NEW) is None


def test_a_new_turn_without_a_user_message_is_never_a_retry() -> None:
    stored = history(user("What is the weather?"))
    assert retried_turn(stored, [{"role": "tool", "content": "x", "tool_call_id": "c"}]) is None
    assert retried_turn(history(), NEW) is None


def test_taking_the_retried_turn_keeps_the_counts_straight() -> None:
    stored = history(user("hi"), reply("Hello!"), user("What is the weather?"), reply(""))
    stored.total_messages = 10  # older messages not loaded
    assert take_retried_turn(stored, NEW) is True
    assert [m.content for m in stored.messages] == ["hi", "Hello!"]
    assert stored.total_messages == 8
    assert take_retried_turn(stored, NEW) is False
