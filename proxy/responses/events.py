"""Responses API output: the response object and its streaming events.

The pipeline answers in chat-completion chunks; here they become output items (one
``message`` per run of text, one ``function_call`` per tool call) and the events the
Responses SDKs read: ``response.created``, ``response.output_item.added``,
``response.output_text.delta``, ``response.function_call_arguments.delta`` / ``.done``,
``response.output_item.done``, ``response.completed`` (``response.failed`` for an
upstream failure mid-stream). meta.info has no place in this protocol and is not sent
(the request takes none from the task's queue: ``CallContext.meta_info_capable``).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from proxy.chat.chunks import ChunkEvent, ToolCallDelta
from proxy.errors import ProxyError
from proxy.responses.ids import PREFIX

log = logging.getLogger(__name__)


def _item_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def message_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    content = [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
    return {
        "id": item_id,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": content if status == "completed" else [],
    }


def function_call_item(
    item_id: str, call_id: str, name: str, arguments: str, status: str = "completed"
) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }


def usage_of(chat_usage: dict[str, Any] | None) -> dict[str, Any] | None:
    if not chat_usage:
        return None
    prompt = int(chat_usage.get("prompt_tokens") or 0)
    completion = int(chat_usage.get("completion_tokens") or 0)
    cached = (chat_usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    reasoning = (chat_usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": int(cached)},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": int(reasoning)},
        "total_tokens": int(chat_usage.get("total_tokens") or prompt + completion),
    }


@dataclass(slots=True)
class ResponseShell:
    """What every snapshot of one response repeats: its id, model and request echo."""

    response_id: str
    model: str
    echo: dict[str, Any]
    created_at: int = field(default_factory=lambda: int(time.time()))
    _messages: int = 0

    def message_id(self) -> str:
        """A message item's id names the turn too (``references``), when it has a task."""
        self._messages += 1
        if self.response_id.startswith(PREFIX) and "." not in self.response_id:
            return f"msg_{self.response_id[len(PREFIX) :]}.{self._messages}"
        return _item_id("msg")

    def snapshot(
        self,
        status: str,
        output: list[dict[str, Any]],
        usage: dict[str, Any] | None = None,
        *,
        finish_reason: str | None = None,
        error: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        if status == "completed" and finish_reason == "length":
            status = "incomplete"
        return {
            "id": self.response_id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "error": error,
            "incomplete_details": (
                {"reason": "max_output_tokens"} if status == "incomplete" else None
            ),
            "model": self.model,
            "output": output,
            "usage": usage,
            **self.echo,
        }


def from_completion(shell: ResponseShell, completion: dict[str, Any]) -> dict[str, Any]:
    """A non-streaming response object from the pipeline's chat completion."""
    choice: dict[str, Any] = next(iter(completion.get("choices") or []), {})
    message = choice.get("message") or {}
    output: list[dict[str, Any]] = []
    text = message.get("content")
    calls = message.get("tool_calls") or []
    if (isinstance(text, str) and text) or not calls:
        output.append(message_item(shell.message_id(), text if isinstance(text, str) else ""))
    for call in calls:
        function = call.get("function") or {}
        output.append(
            function_call_item(
                _item_id("fc"),
                str(call.get("id") or _item_id("call")),
                str(function.get("name") or ""),
                str(function.get("arguments") or ""),
            )
        )
    return shell.snapshot(
        "completed",
        output,
        usage_of(completion.get("usage")),
        finish_reason=choice.get("finish_reason"),
    )


@dataclass(slots=True)
class _OpenCall:
    output_index: int
    item_id: str
    call_id: str
    name: str
    arguments: list[str] = field(default_factory=list)

    def item(self, status: str = "completed") -> dict[str, Any]:
        return function_call_item(
            self.item_id, self.call_id, self.name, "".join(self.arguments), status
        )


class ResponseEventStream:
    """Turns the pipeline's chunk events into Responses API SSE frames."""

    def __init__(self, shell: ResponseShell) -> None:
        self.shell = shell
        self._sequence = 0
        self._output: list[dict[str, Any] | None] = []  # by output_index; None while open
        self._text_index: int | None = None
        self._text_id = ""
        self._text: list[str] = []
        self._calls: dict[int, _OpenCall] = {}
        self._usage: dict[str, Any] | None = None
        self._finish: str | None = None

    def _event(self, kind: str, **fields: Any) -> bytes:
        payload = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"

    def _output_so_far(self) -> list[dict[str, Any]]:
        return [item for item in self._output if item is not None]

    async def frames(self, events: AsyncIterator[ChunkEvent]) -> AsyncIterator[bytes]:
        yield self._event("response.created", response=self.shell.snapshot("in_progress", []))
        yield self._event("response.in_progress", response=self.shell.snapshot("in_progress", []))
        try:
            async for event in events:
                out = self._on_event(event)
                if out:
                    yield b"".join(out)
        except ProxyError as exc:
            log.warning("upstream failed during a Responses stream: %s", exc.message)
            error = {"code": exc.code or "server_error", "message": exc.message}
            failed = self.shell.snapshot("failed", self._output_so_far(), error=error)
            yield self._event("response.failed", response=failed)
            return
        out = self._close_text() + self._close_calls()
        final = self.shell.snapshot(
            "completed",
            self._output_so_far(),
            usage_of(self._usage),
            finish_reason=self._finish,
        )
        kind = "response.completed" if final["status"] == "completed" else "response.incomplete"
        yield b"".join([*out, self._event(kind, response=final)])

    def _on_event(self, event: ChunkEvent) -> list[bytes]:
        out: list[bytes] = []
        if event.usage:
            self._usage = event.usage
        if event.finish_reason:
            self._finish = event.finish_reason
        if event.text:
            if self._calls and self._text_index is None:
                out += self._close_calls()  # text after tool calls: a new message item
            if self._text_index is None:
                out += self._open_text()
            self._text.append(event.text)
            out.append(
                self._event(
                    "response.output_text.delta",
                    item_id=self._text_id,
                    output_index=self._text_index,
                    content_index=0,
                    delta=event.text,
                    logprobs=[],
                )
            )
        for delta in event.tool_calls:
            out += self._on_tool_call(delta)
        return out

    def _open_text(self) -> list[bytes]:
        self._text_index, self._text_id, self._text = len(self._output), self.shell.message_id(), []
        self._output.append(None)
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        return [
            self._event(
                "response.output_item.added",
                output_index=self._text_index,
                item=message_item(self._text_id, "", "in_progress"),
            ),
            self._event(
                "response.content_part.added",
                item_id=self._text_id,
                output_index=self._text_index,
                content_index=0,
                part=part,
            ),
        ]

    def _close_text(self) -> list[bytes]:
        index = self._text_index
        if index is None:
            return []
        text = "".join(self._text)
        item = message_item(self._text_id, text)
        self._output[index] = item
        self._text_index = None
        where = {"item_id": self._text_id, "output_index": index, "content_index": 0}
        return [
            self._event("response.output_text.done", **where, text=text, logprobs=[]),
            self._event("response.content_part.done", **where, part=item["content"][0]),
            self._event("response.output_item.done", output_index=index, item=item),
        ]

    def _on_tool_call(self, delta: ToolCallDelta) -> list[bytes]:
        out: list[bytes] = []
        call = self._calls.get(delta.index)
        if call is None:
            out += self._close_text()
            call = _OpenCall(
                len(self._output),
                _item_id("fc"),
                delta.call_id or _item_id("call"),
                delta.name,
            )
            self._calls[delta.index] = call
            self._output.append(None)
            out.append(
                self._event(
                    "response.output_item.added",
                    output_index=call.output_index,
                    item=call.item("in_progress"),
                )
            )
        elif delta.name:
            call.name += delta.name
        if delta.arguments:
            call.arguments.append(delta.arguments)
            out.append(
                self._event(
                    "response.function_call_arguments.delta",
                    item_id=call.item_id,
                    output_index=call.output_index,
                    delta=delta.arguments,
                )
            )
        return out

    def _close_calls(self) -> list[bytes]:
        out: list[bytes] = []
        for call in sorted(self._calls.values(), key=lambda c: c.output_index):
            item = call.item()
            self._output[call.output_index] = item
            out.append(
                self._event(
                    "response.function_call_arguments.done",
                    item_id=call.item_id,
                    output_index=call.output_index,
                    name=call.name,
                    arguments=item["arguments"],
                )
            )
            out.append(
                self._event("response.output_item.done", output_index=call.output_index, item=item)
            )
        self._calls = {}
        return out
