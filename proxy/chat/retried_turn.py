"""A turn retried without a request id is the same turn, not a new one.

Agent frameworks set headers once per client, not per turn, so their retries carry no
``X-Request-Id``: a client that timed out resends the same messages. When the request's
new user turn repeats the task's last stored user turn, and that turn's reply was never
completed (the caller left, the upstream failed, or it was interrupted before any
text), the request is that turn again: the stored user turn stands for it (it is
replaced, never added a second time) and the reply follows it.
"""

from __future__ import annotations

from typing import Any

from proxy.context.history import StoredMessage, TaskHistory
from proxy.context.matching import content_text, normalise


def _unanswered(message: StoredMessage) -> bool:
    """A reply that said nothing: cut before its first word, no tool calls."""
    return (
        message.role == "assistant"
        and not message.tool_calls
        and not normalise(content_text(message.content))
    )


def retried_turn(history: TaskHistory, new_turn: list[dict[str, Any]]) -> int | None:
    """The index in ``history.messages`` of the stored user turn this request retries."""
    if not new_turn or new_turn[0].get("role") != "user":
        return None
    messages = history.messages
    index = len(messages) - 1
    while index >= 0 and _unanswered(messages[index]):
        index -= 1
    if index < 0:
        return None
    stored = messages[index]
    if stored.role != "user" or stored.source != "turn":
        return None
    repeated = normalise(content_text(new_turn[0].get("content")))
    if not repeated or normalise(content_text(stored.content)) != repeated:
        return None
    return index


def take_retried_turn(history: TaskHistory, new_turn: list[dict[str, Any]]) -> bool:
    """If the request retries the stored unanswered turn, take that turn (and its empty
    replies) out of ``history``, so that the prompt carries the user turn once, as the
    request's new turn; the caller then stores only the reply. True if it did."""
    index = retried_turn(history, new_turn)
    if index is None:
        return False
    taken = len(history.messages) - index
    history.messages = history.messages[:index]
    history.total_messages = max(0, history.total_messages - taken)
    return True
