"""What a voice engine may speak: the first speakable token, and reasoning kept out.

An upstream's first event is often not a word: OpenAI sends a role-only chunk with empty
content at once, reasoning models (deepseek-r1 and its distills) stream
``reasoning_content`` or a ``<think>...</think>`` block for seconds before the answer.
Every first-token timer (first-token timeout, fallback, hedging, fast-first-words filler,
``gen_ai_server_time_to_first_token``) waits for the first event that carries speakable
text or a tool call. Reasoning never reaches the caller: it is removed from the events.
"""

from __future__ import annotations

from typing import Any

import orjson

from proxy.upstream.sse import DONE

REASONING_FIELDS = ("reasoning_content", "reasoning")
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
MAX_REASONING_CHARS = 64 * 1024  # kept for a profile that stores it; bounded


class SpeakableFilter:
    """One per upstream stream: feed each SSE data payload in order.

    ``feed`` returns the payload to relay (rewritten without reasoning, or ``None`` to
    drop it) and whether the stream has become decisive: a speakable event, a tool call,
    an error, a finish or ``[DONE]`` was seen (the first-token wait ends there).
    """

    __slots__ = ("_in_think", "_reasoning_chars", "decisive", "reasoning")

    def __init__(self) -> None:
        self._in_think = False
        self.decisive = False
        self.reasoning: list[str] = []
        self._reasoning_chars = 0

    @property
    def reasoning_text(self) -> str:
        return "".join(self.reasoning)

    def passes(self, raw: bytes) -> bool:
        """Whether a network read's events all go through unchanged (checked on the raw
        bytes once, instead of event by event): words flow and no reasoning is in sight."""
        return (
            self.decisive
            and not self._in_think
            and raw.find(b"reasoning") < 0  # find, not ``in``: ``proxy.upstream.sse.CR``
            and raw.find(b"<think>") < 0
        )

    def feed(self, payload: bytes) -> bytes | None:
        if payload == DONE:
            self.decisive = True
            return payload
        # Fast path once words flow: nothing to strip, nothing to decide.
        if (
            self.decisive
            and not self._in_think
            and payload.find(b"reasoning") < 0
            and payload.find(b"<think>") < 0
        ):
            return payload
        try:
            event = orjson.loads(payload)
        except orjson.JSONDecodeError:
            self.decisive = True  # the relay reports it
            return payload
        if not isinstance(event, dict):
            return payload
        if "error" in event:
            self.decisive = True
            return payload
        changed = False
        for choice in event.get("choices") or ():
            if isinstance(choice, dict):
                changed = self._clean_choice(choice) or changed
        if not changed:
            return payload
        if not event.get("usage") and all(_empty(c) for c in event.get("choices") or ()):
            return None  # it only carried reasoning
        return orjson.dumps(event)

    def _clean_choice(self, choice: dict[str, Any]) -> bool:
        """Remove reasoning from one choice's delta; note whether it is decisive."""
        if choice.get("finish_reason"):
            self.decisive = True
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            return False
        changed = False
        for name in REASONING_FIELDS:
            if name in delta:
                text = delta.pop(name)
                if isinstance(text, str):
                    self._keep_reasoning(text)
                changed = True
        if delta.get("tool_calls"):
            self.decisive = True
        content = delta.get("content")
        if isinstance(content, str) and content:
            visible = self._strip_think(content)
            if visible != content:
                delta["content"] = visible
                changed = True
            if visible.strip():
                self.decisive = True
        return changed

    def _strip_think(self, text: str) -> str:
        visible: list[str] = []
        while text:
            if self._in_think:
                end = text.find(THINK_CLOSE)
                if end < 0:
                    self._keep_reasoning(text)
                    break
                self._keep_reasoning(text[:end])
                text = text[end + len(THINK_CLOSE) :]
                self._in_think = False
                if not self.decisive:
                    text = text.lstrip()  # the blank line a model puts after </think>
            else:
                start = text.find(THINK_OPEN)
                if start < 0:
                    visible.append(text)
                    break
                visible.append(text[:start])
                text = text[start + len(THINK_OPEN) :]
                self._in_think = True
        return "".join(visible)

    def _keep_reasoning(self, text: str) -> None:
        room = MAX_REASONING_CHARS - self._reasoning_chars
        if text and room > 0:
            self.reasoning.append(text[:room])
            self._reasoning_chars += min(len(text), room)


def _empty(choice: Any) -> bool:
    """A choice with nothing left to relay (reasoning removed, no role, no finish)."""
    if not isinstance(choice, dict) or choice.get("finish_reason"):
        return False
    delta = choice.get("delta") or {}
    return not any(delta.get(key) for key in ("content", "tool_calls", "role", "function_call"))


def strip_reasoning_from_completion(response: dict[str, Any]) -> str:
    """A non-streaming completion without its reasoning; returns the reasoning removed."""
    removed: list[str] = []
    for choice in response.get("choices") or ():
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict):
            continue
        for name in REASONING_FIELDS:
            text = message.pop(name, None)
            if isinstance(text, str):
                removed.append(text)
        content = message.get("content")
        if isinstance(content, str) and THINK_OPEN in content:
            speakable = SpeakableFilter()
            visible = speakable._strip_think(content)
            message["content"] = visible.lstrip() if visible.strip() else visible
            removed.append(speakable.reasoning_text)
    return "".join(removed)
