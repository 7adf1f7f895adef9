"""Building the upstream prompt from a request and the task's stored history.

A request from the engine looks like

    [system...] [UserMessages...] [earlier rounds (History > 0)...] [new turn]

- The leading system messages are applied as given.
- The new turn is what follows the last assistant message; if it holds several user
  messages, only the last one (and what follows it) is new: the ones before are
  prompt messages (``UserMessages``) that precede every turn.
- With a stored history the store is the truth: earlier rounds the request repeats
  are dropped (they may carry text the user never heard); messages before the first
  repeated one are kept in place as prompt messages.
- With an empty store, the request's earlier rounds seed it (once).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from proxy.context.budget import TokenCounter, fit_history_in_blocks
from proxy.context.history import StoredMessage, TaskHistory
from proxy.context.matching import content_text, normalise
from proxy.settings import HistoryPolicy

SYSTEM_ROLES = ("system", "developer")
SUMMARY_PREFIX = "Summary of the earlier conversation: "


@dataclass(slots=True)
class RequestParts:
    system: list[dict[str, Any]]
    earlier: list[dict[str, Any]]
    prompt_tail: list[dict[str, Any]]  # UserMessages that sit just before the new turn
    new_turn: list[dict[str, Any]]


@dataclass(slots=True)
class AssembledPrompt:
    messages: list[dict[str, Any]]
    new_turn: list[StoredMessage]
    seed: list[StoredMessage] | None = None
    history_used: list[StoredMessage] = field(default_factory=list)


def split_request(messages: list[dict[str, Any]]) -> RequestParts:
    start = 0
    while start < len(messages) and messages[start].get("role") in SYSTEM_ROLES:
        start += 1
    rest = messages[start:]
    last_assistant = max(
        (i for i, m in enumerate(rest) if m.get("role") == "assistant"), default=-1
    )
    earlier, trailing = rest[: last_assistant + 1], rest[last_assistant + 1 :]
    last_user = max((i for i, m in enumerate(trailing) if m.get("role") == "user"), default=0)
    return RequestParts(
        system=messages[:start],
        earlier=earlier,
        prompt_tail=trailing[:last_user],
        new_turn=trailing[last_user:],
    )


def to_stored(message: dict[str, Any], *, request_id: str | None, source: str) -> StoredMessage:
    return StoredMessage(
        role=str(message.get("role")),
        content=message.get("content"),
        name=message.get("name"),
        tool_calls=message.get("tool_calls"),
        tool_call_id=message.get("tool_call_id"),
        request_id=request_id,
        source=source,
    )


def seed_from(earlier: list[dict[str, Any]], *, limit: int) -> list[StoredMessage] | None:
    """What the request's earlier rounds seed an empty store with: at most ``limit``
    newest messages (the policy's ``load_limit``: no request ever loads more), starting
    at a user turn so that no cut-off tool result leads. 50,000 messages in one request
    must not become 50,000 stored ones."""
    tail = earlier[-limit:] if len(earlier) > limit else earlier
    if len(tail) < len(earlier):
        start = next((i for i, m in enumerate(tail) if m.get("role") == "user"), len(tail))
        tail = tail[start:]
    return [to_stored(m, request_id=None, source="seed") for m in tail] or None


def _first_repeated(earlier: list[dict[str, Any]], stored: list[StoredMessage]) -> int:
    """Index of the first request message that the store already holds.

    Stored turns are exact copies, except interrupted replies, which the request may
    carry in full: those match by prefix. Set lookups keep this linear.
    """
    if not earlier:  # the engine sends no earlier rounds (``History`` 0): nothing to match
        return 0
    exact = {(m.role, normalise(content_text(m.content))) for m in stored}
    cut_short = [normalise(content_text(m.content)) for m in stored if m.interrupted]
    for index, message in enumerate(earlier):
        role, text = message.get("role"), normalise(content_text(message.get("content")))
        if (role, text) in exact:
            return index
        if role == "assistant" and any(text.startswith(short) for short in cut_short if short):
            return index
    return len(earlier)


def said_turn(messages: list[dict[str, Any]], request_id: str | None) -> list[StoredMessage]:
    """What the user said in this request (its new turn), as the history stores it."""
    return [to_stored(m, request_id=request_id, source="turn") for m in messages]


def assemble(
    parts: RequestParts,
    history: TaskHistory,
    *,
    policy: HistoryPolicy,
    counter: TokenCounter,
    request_id: str | None,
) -> AssembledPrompt:
    new_turn = said_turn(parts.new_turn, request_id)
    store_is_empty = history.total_messages == 0 and not history.summary
    if store_is_empty:
        seed = seed_from(parts.earlier, limit=policy.load_limit)
        messages = parts.system + parts.earlier + parts.prompt_tail + parts.new_turn
        return AssembledPrompt(messages=messages, new_turn=new_turn, seed=seed)

    prompt = parts.earlier[: _first_repeated(parts.earlier, history.messages)]
    prompt += parts.prompt_tail
    pinned = list(parts.system)
    if history.summary:
        pinned.append({"role": "system", "content": SUMMARY_PREFIX + history.summary})
    fixed = sum(counter.count_openai_message(m) for m in pinned + prompt)
    # Trim history and new turn as one conversation: the new turn may hold the tool
    # results of a stored assistant message, which must then stay in the window.
    window = fit_history_in_blocks(
        history.messages + new_turn,
        first_index=max(0, history.total_messages - len(history.messages)),
        fixed_tokens=fixed,
        token_budget=policy.token_budget,
        max_turns=_turn_limit(policy.max_turns, new_turn),
        load_limit=policy.load_limit,
        low_water=policy.low_water,
        counter=counter,
    )
    new_ids = {m.id for m in new_turn}
    window = [m for m in window if m.id not in new_ids]
    messages = pinned + prompt + [m.to_openai() for m in window] + parts.new_turn
    return AssembledPrompt(messages=messages, new_turn=new_turn, history_used=window)


def _turn_limit(max_past_turns: int, new_turn: list[StoredMessage]) -> int:
    """``max_turns`` counts past turns; a new turn that starts with ``user`` is one more."""
    if max_past_turns == 0:
        return 0
    opens_a_turn = bool(new_turn) and new_turn[0].role == "user"
    return max_past_turns + 1 if opens_a_turn else max_past_turns
