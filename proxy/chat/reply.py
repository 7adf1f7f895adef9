"""Accumulating what the upstream streamed: text, tool calls, finish reason."""

from __future__ import annotations

from typing import Any

import orjson

from proxy.context.history import StoredAnswer, StoredMessage
from proxy.errors import UpstreamError
from proxy.upstream.sse import DONE
from proxy.upstream.usage import UpstreamUsage, parse_usage


class ReplyAccumulator:
    """Reads each relayed event once; keeps choice 0, the one a voice engine speaks."""

    __slots__ = (
        "completion_id",
        "done",
        "error",
        "finish_reason",
        "model",
        "parts",
        "tool_calls",
        "usage",
        "usage_only",
    )

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.tool_calls: dict[int, dict[str, Any]] = {}
        self.finish_reason: str | None = None
        self.model: str | None = None
        self.completion_id: str | None = None
        self.done = False
        self.error: UpstreamError | None = None
        self.usage: UpstreamUsage | None = None
        self.usage_only = False  # the last event fed carried usage and no choices

    def feed(self, payload: bytes) -> str:
        """Account for one event; return the text it adds to the reply."""
        self.usage_only = False
        if payload == DONE:
            self.done = True
            return ""
        try:
            event = orjson.loads(payload)
        except orjson.JSONDecodeError:
            self.error = UpstreamError("upstream sent an event that is not JSON")
            return ""
        if not isinstance(event, dict):
            return ""
        if "error" in event:
            message = str((event.get("error") or {}).get("message") or "upstream error")
            self.error = UpstreamError(f"upstream failed mid-stream: {message}")
            return ""
        if event.get("usage"):
            self.usage = parse_usage(event["usage"])
            self.usage_only = not event.get("choices")
        if self.completion_id is None and isinstance(event.get("id"), str):
            self.completion_id = event["id"]
            self.model = event.get("model")
        for choice in event.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
            delta = choice.get("delta") or {}
            if delta.get("tool_calls"):
                self._add_tool_calls(delta["tool_calls"])
            text = delta.get("content")
            if isinstance(text, str) and text:
                self.parts.append(text)
                return text
        return ""

    def _add_tool_calls(self, deltas: list[dict[str, Any]]) -> None:
        for delta in deltas:
            call = self.tool_calls.setdefault(
                int(delta.get("index", 0)),
                {"id": None, "type": "function", "function": {"name": "", "arguments": ""}},
            )
            if delta.get("id"):
                call["id"] = delta["id"]
            function = delta.get("function") or {}
            call["function"]["name"] += function.get("name") or ""
            call["function"]["arguments"] += function.get("arguments") or ""

    @classmethod
    def from_completion(cls, response: dict[str, Any]) -> ReplyAccumulator:
        """The same view of a non-streaming completion."""
        reply = cls()
        choice: dict[str, Any] = next(iter(response.get("choices") or []), {})
        message = choice.get("message") or {}
        if isinstance(message.get("content"), str):
            reply.parts.append(message["content"])
        for index, call in enumerate(message.get("tool_calls") or []):
            reply.tool_calls[index] = call
        reply.finish_reason = choice.get("finish_reason")
        reply.model, reply.completion_id = response.get("model"), response.get("id")
        reply.usage = parse_usage(response.get("usage"))
        return reply

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def assistant_message(self, request_id: str | None) -> StoredMessage:
        calls = [self.tool_calls[i] for i in sorted(self.tool_calls)] or None
        return StoredMessage(
            role="assistant",
            content=self.text if (self.parts or not calls) else None,
            tool_calls=calls,
            request_id=request_id,
        )

    def answer(self) -> StoredAnswer:
        return StoredAnswer(
            content=self.text,
            model=self.model,
            finish_reason=self.finish_reason or "stop",
            completion_id=self.completion_id,
        )
