"""Relaying a streamed reply to the caller, with server-side tool steps.

Each upstream event is passed on as it arrives (all the events of one network read in
one write, never waiting for more). The relay keeps what the caller received so that
a reply cut short is recorded as it was heard.

When the agent's profile has tools (and the caller did not send its own), tool calls
never reach the caller: a short filler is spoken while the proxy runs the calls (in
parallel), feeds the results back and streams the model's next step, up to a limit.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from proxy.chat.meta import meta_info_frame
from proxy.chat.reply import ReplyAccumulator
from proxy.chat.sse import DONE_FRAME, chunk_event, error_frame, frame, json_frame
from proxy.chat.turns import PendingTurn, TurnWriter
from proxy.context.history import StoredMessage
from proxy.errors import UpstreamError
from proxy.metrics import ProxyMetrics
from proxy.observability import turnlog
from proxy.upstream.routes import CompletionStream
from proxy.upstream.usage import UpstreamUsage
from proxy.usage.recorder import report as report_usage

log = logging.getLogger(__name__)

DEFAULT_FILLER = "One moment, let me check."


@dataclass(slots=True)
class ToolBelt:
    """The profile's server-side tools for one request."""

    specs: dict[str, Any]  # name -> proxy.tools.registry.ToolSpec
    runner: Any  # proxy.tools.runner.ToolRunner
    fillers: list[str] = field(default_factory=list)  # the profile's phrases
    max_steps: int = 4

    def filler_for(self, tool_name: str | None) -> str:
        spec = self.specs.get(tool_name or "")
        if spec is not None and spec.filler:
            return str(spec.filler)
        return random.choice(self.fillers) if self.fillers else DEFAULT_FILLER


@dataclass(slots=True)
class RelayPlan:
    body: dict[str, Any]  # what went upstream
    model: str
    received_at: float
    turn: PendingTurn | None = None
    meta: list[dict[str, Any]] = field(default_factory=list)  # meta.info to send first
    emit_meta: bool = False
    tools: ToolBelt | None = None
    opening_filler: str | None = None  # spoken before the first token (fast first words)


class StreamRelay:
    def __init__(
        self,
        plan: RelayPlan,
        first: Callable[[], Awaitable[CompletionStream]],
        open_next: Callable[[dict[str, Any]], Awaitable[CompletionStream]],
        writer: TurnWriter,
        metrics: ProxyMetrics,
    ) -> None:
        self.plan = plan
        self._first = first
        self._open_next = open_next
        self._writer = writer
        self._metrics = metrics
        self._completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        self._sent_any = False
        self._said_anything = False  # any text reached the caller during this turn
        self._produced: list[StoredMessage] = []  # finished tool steps of this turn
        self._step_text: list[str] = []  # text of the current step that reached the caller
        self._usages: list[UpstreamUsage] = []  # one per model call of this turn
        # Usage is always asked of the upstream (prompt cache figures); the caller gets
        # the usage chunk only if it asked for it too.
        self._forward_usage = bool((plan.body.get("stream_options") or {}).get("include_usage"))

    async def frames(self) -> AsyncIterator[bytes]:
        plan, metrics = self.plan, self._metrics
        metrics.active_streams.inc()
        finished = False
        stream: CompletionStream | None = None
        reply = ReplyAccumulator()
        try:
            if plan.emit_meta and plan.meta:
                yield b"".join(meta_info_frame(self._completion_id, m) for m in plan.meta)
            if plan.opening_filler:
                yield self._speak(plan.opening_filler)
                self._step_text.append(plan.opening_filler)
                self._said_anything = True
            stream = await self._first()
            body = plan.body
            for step in range(plan.tools.max_steps if plan.tools else 1):
                reply = ReplyAccumulator()
                async for out in self._relay_step(stream, reply, step == 0):
                    yield out
                stream.close()
                calls = [reply.tool_calls[i] for i in sorted(reply.tool_calls)]
                if plan.tools is None or not calls or step + 1 == plan.tools.max_steps:
                    break  # an answer, or the step limit: what was said is the reply
                results_frames, body = await self._run_tools(body, calls, step, reply)
                if results_frames:
                    yield results_frames
                stream = await self._open_next(body)
            final = StoredMessage(
                role="assistant",
                content="".join(self._step_text),
                request_id=plan.turn.call.request_id if plan.turn else None,
            )
            if plan.tools is None and reply.tool_calls:  # pass-through tools: keep the calls
                final = reply.assistant_message(final.request_id)
                final.content = "".join(self._step_text) or final.content
            finished = True
            if plan.turn is not None:
                answer = reply.answer()
                answer.content = "".join(self._step_text)
                # Shielded: a caller leaving now must not cancel the write of what it heard.
                await asyncio.shield(
                    self._writer.finished(plan.turn, [*self._produced, final], answer)
                )
            yield DONE_FRAME
        except UpstreamError as exc:
            log.warning("upstream failed mid-stream: %s", exc.message)
            turnlog.failed(exc.message)
            yield error_frame(exc) + DONE_FRAME
        finally:
            if stream is not None:
                stream.close()
            metrics.active_streams.dec()
            self._observe()
            if plan.turn is not None and not finished:
                self._writer.interrupted(plan.turn, self._heard())

    async def _relay_step(
        self, stream: CompletionStream, reply: ReplyAccumulator, first_step: bool
    ) -> AsyncIterator[bytes]:
        hide_tools = self.plan.tools is not None
        metrics = self._metrics
        last_at: float | None = None
        batch: list[bytes] | None = stream.first_events
        batches = stream.batches()
        while batch is not None:
            now = time.perf_counter()
            if last_at is None:
                if first_step:
                    overhead = now - self.plan.received_at - stream.waited
                    metrics.overhead.observe(max(overhead, 0.0))
            else:
                metrics.chunk_gap.observe(now - last_at)
            last_at = now
            out: list[bytes] = []
            texts: list[str] = []
            for payload in batch:
                calls_before = len(reply.tool_calls)
                text = reply.feed(payload)
                if reply.done or reply.error is not None:
                    break
                if reply.usage_only and not self._forward_usage:
                    continue
                if hide_tools and (reply.tool_calls or reply.finish_reason == "tool_calls"):
                    if len(reply.tool_calls) > calls_before and not (self._said_anything or texts):
                        name = reply.tool_calls[min(reply.tool_calls)]["function"]["name"]
                        filler = self.plan.tools.filler_for(name) if self.plan.tools else ""
                        out.append(self._speak(filler))
                        texts.append(filler)
                    elif text:
                        out.append(self._speak(text))
                        texts.append(text)
                    continue  # tool-call deltas and their finish never reach the caller
                out.append(frame(payload))
                if text:
                    texts.append(text)
            if out:
                self._sent_any = True
                yield b"".join(out)
                self._step_text.extend(texts)  # reached the caller
                self._said_anything = self._said_anything or bool(texts)
            if reply.error is not None:
                raise reply.error
            if reply.done:
                if reply.usage is not None:
                    self._usages.append(reply.usage)
                report_usage(reply.model, reply.usage)
                return
            batch = await anext(batches, None)
        raise UpstreamError("upstream stream ended before [DONE]")

    async def _run_tools(
        self, body: dict[str, Any], calls: list[dict[str, Any]], step: int, reply: ReplyAccumulator
    ) -> tuple[bytes, dict[str, Any]]:
        from proxy.tools.runner import ToolCall

        tools = self.plan.tools
        assert tools is not None
        request_id = self.plan.turn.call.request_id if self.plan.turn else None
        results = await tools.runner.run_all(
            [
                ToolCall(
                    c["id"] or f"call_{uuid.uuid4().hex[:12]}",
                    c["function"]["name"],
                    c["function"]["arguments"],
                )
                for c in calls
            ],
            tools.specs,
        )
        for call, result in zip(calls, results, strict=True):
            call["id"] = result.call_id
            turnlog.tool_done(result.name, result.ok, result.elapsed_ms)
            self._metrics.tool_calls.labels(result.name, "ok" if result.ok else "error").inc()
        assistant = StoredMessage(
            role="assistant",
            content="".join(self._step_text) or None,
            tool_calls=calls,
            request_id=request_id,
        )
        answers = [
            StoredMessage(
                role="tool", content=r.content, tool_call_id=r.call_id, request_id=request_id
            )
            for r in results
        ]
        self._produced += [assistant, *answers]
        self._step_text = []
        visible = [
            _visible_result(r)
            for r in results
            if r.ok and getattr(tools.specs.get(r.name), "show_result", False)
        ]
        frames = b""
        if visible and self.plan.emit_meta:
            frames = b"".join(meta_info_frame(self._completion_id, v) for v in visible)
        self.plan.meta.extend(visible)
        messages = [*body["messages"], *(m.to_openai() for m in (assistant, *answers))]
        body = {**body, "messages": messages}
        if step + 2 >= tools.max_steps:  # the last step must answer in words
            body["tool_choice"] = "none"
        return frames, body

    def _speak(self, text: str) -> bytes:
        """A content chunk the proxy itself says (a filler)."""
        delta: dict[str, Any] = {"content": text}
        if not self._sent_any:
            delta["role"] = "assistant"
        self._sent_any = True
        return json_frame(chunk_event(self._completion_id, self.plan.model, delta, None))

    def _heard(self) -> list[StoredMessage]:
        """What the caller received, for a reply cut short."""
        heard = list(self._produced)
        if self._step_text:
            heard.append(
                StoredMessage(
                    role="assistant",
                    content="".join(self._step_text),
                    request_id=self.plan.turn.call.request_id if self.plan.turn else None,
                    interrupted=True,
                )
            )
        return heard  # finished tool steps stay: those calls happened

    def _observe(self) -> None:
        metrics, model = self._metrics, self.plan.model
        elapsed = time.perf_counter() - self.plan.received_at
        metrics.operation_duration.labels("chat", model).observe(elapsed)
        for usage in self._usages:
            metrics.token_usage.labels("input", model).observe(usage.prompt_tokens)
            metrics.token_usage.labels("output", model).observe(usage.completion_tokens)
            metrics.prompt_tokens.labels(model).inc(usage.prompt_tokens)
            metrics.cached_prompt_tokens.labels(model).inc(usage.cached_tokens)


MAX_VISIBLE_RESULT = 16 * 1024  # a client-app card, not a data transfer


def _visible_result(result: Any) -> dict[str, Any]:
    if result.data is not None and len(result.content) <= MAX_VISIBLE_RESULT:
        return {"tool": result.name, "result": result.data}
    return {"tool": result.name, "result": result.content[:MAX_VISIBLE_RESULT], "truncated": True}
