"""One tool step of a turn: run the model's calls of server-side tools, and the messages
that record it; and the whole loop for a non-streaming reply.

A step the model ends with calls of the caller's own tools goes back to the caller as
an ordinary tool-call reply (calls of the proxy's tools in that same step are not run:
the model asks again once it has the caller's results).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from proxy.context.history import StoredMessage
from proxy.metrics import ProxyMetrics
from proxy.observability import turnlog
from proxy.tools.belt import ToolBelt
from proxy.tools.runner import ToolCall, ToolResult

MAX_VISIBLE_RESULT = 16 * 1024  # a client-app card, not a data transfer


@dataclass(slots=True)
class ToolStep:
    assistant: StoredMessage  # the model's message with its tool calls
    answers: list[StoredMessage]  # one tool message per call
    visible: list[dict[str, Any]]  # results shown to the client app (meta.info)

    @property
    def messages(self) -> list[StoredMessage]:
        return [self.assistant, *self.answers]


def call_name(call: dict[str, Any]) -> str:
    function = call.get("function")
    return str(function.get("name") or "") if isinstance(function, dict) else ""


def handed_back(belt: ToolBelt, calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The calls of the caller's tools (they go back to the caller), with ids."""
    passed = [c for c in calls if not belt.runs(call_name(c))]
    for call in passed:
        call["id"] = call.get("id") or f"call_{uuid.uuid4().hex[:24]}"
    return passed


async def run_step(
    belt: ToolBelt,
    calls: list[dict[str, Any]],
    content: str | None,
    request_id: str | None,
    metrics: ProxyMetrics,
) -> ToolStep:
    """Run every call at once; the step's messages as the history records them."""
    results = await belt.runner.run_all(
        [
            ToolCall(
                c.get("id") or f"call_{uuid.uuid4().hex[:12]}",
                call_name(c),
                str((c.get("function") or {}).get("arguments") or ""),
            )
            for c in calls
        ],
        belt.specs,
    )
    for call, result in zip(calls, results, strict=True):
        call["id"] = result.call_id
        turnlog.tool_done(result.name, result.ok, result.elapsed_ms)
        metrics.tool_calls.labels(result.name, "ok" if result.ok else "error").inc()
    assistant = StoredMessage(
        role="assistant", content=content or None, tool_calls=calls, request_id=request_id
    )
    answers = [
        StoredMessage(role="tool", content=r.content, tool_call_id=r.call_id, request_id=request_id)
        for r in results
    ]
    visible = [
        visible_result(r)
        for r in results
        if r.ok and getattr(belt.specs.get(r.name), "show_result", False)
    ]
    return ToolStep(assistant, answers, visible)


def next_body(body: dict[str, Any], step: ToolStep, index: int, belt: ToolBelt) -> dict[str, Any]:
    """The request for the model's next step: the results appended."""
    messages = [*body["messages"], *(m.to_openai() for m in step.messages)]
    body = {**body, "messages": messages}
    if index + 2 >= belt.max_steps:  # the last step must answer in words
        body["tool_choice"] = "none"
    return body


def visible_result(result: ToolResult) -> dict[str, Any]:
    if result.data is not None and len(result.content) <= MAX_VISIBLE_RESULT:
        return {"tool": result.name, "result": result.data}
    return {"tool": result.name, "result": result.content[:MAX_VISIBLE_RESULT], "truncated": True}


@dataclass(slots=True)
class CompletedTurn:
    """A non-streaming reply after its tool steps."""

    response: dict[str, Any]
    produced: list[StoredMessage] = field(default_factory=list)  # the tool steps' messages
    visible: list[dict[str, Any]] = field(default_factory=list)


async def complete_with_tools(
    complete: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]],
    body: dict[str, Any],
    belt: ToolBelt | None,
    request_id: str | None,
    metrics: ProxyMetrics,
) -> CompletedTurn:
    """Call the model; while it calls server-side tools, run them and call it again."""
    turn = CompletedTurn(await complete(body))
    if belt is None:
        return turn
    for index in range(belt.max_steps - 1):
        choice = next(iter(turn.response.get("choices") or []), None)
        message = choice.get("message") if isinstance(choice, dict) else None
        calls = message.get("tool_calls") if isinstance(message, dict) else None
        if not isinstance(calls, list) or not calls:
            return turn
        assert isinstance(choice, dict) and isinstance(message, dict)
        passed = handed_back(belt, calls)
        if passed:  # the caller's tools: the reply is theirs to act on
            choice["message"] = {**message, "tool_calls": passed}
            return turn
        content = message.get("content") if isinstance(message.get("content"), str) else None
        step = await run_step(belt, calls, content, request_id, metrics)
        turn.produced += step.messages
        turn.visible += step.visible
        body = next_body(body, step, index, belt)
        turn.response = await complete(body)
    return turn
