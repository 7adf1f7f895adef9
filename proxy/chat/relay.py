"""Relaying a streamed reply to the caller, with server-side tool steps.

Each upstream event is passed on as it arrives (all the events of one network read in
one write, never waiting for more). The relay keeps what the caller received so that
a reply cut short is recorded as it was heard.

When the agent's profile has tools, calls of them never reach the caller: a short filler
is spoken while the proxy runs the calls (in parallel), feeds the results back and
streams the model's next step, up to a limit. Calls of the caller's own tools are handed
back to it as an ordinary tool-call reply. Segments (filler, the words before and after
a tool call) are joined as sentences (``proxy.chat.joins``).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from proxy.chat.joins import separator, speakable
from proxy.chat.meta import meta_info_frame, upstream_meta_info
from proxy.chat.reply import ReplyAccumulator
from proxy.chat.sse import DONE_FRAME, chunk_event, error_frame, frame, json_frame
from proxy.chat.turns import PendingTurn, TurnWriter
from proxy.context.history import StoredMessage
from proxy.errors import UpstreamError
from proxy.metrics import ProxyMetrics
from proxy.observability import turnlog
from proxy.tools.belt import ToolBelt
from proxy.tools.steps import handed_back, next_body, run_step
from proxy.upstream.routes import CompletionStream
from proxy.upstream.sse import DONE
from proxy.upstream.usage import UpstreamUsage
from proxy.usage.recorder import report as report_usage

log = logging.getLogger(__name__)

__all__ = ["RelayPlan", "StreamRelay", "ToolBelt"]


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
    keep_reasoning: bool = False  # the profile stores the model's reasoning with its reply


class StreamRelay:
    def __init__(
        self,
        plan: RelayPlan,
        first: Callable[[], Awaitable[CompletionStream]],
        open_next: Callable[[dict[str, Any]], Awaitable[CompletionStream]],
        writer: TurnWriter,
        metrics: ProxyMetrics,
        on_end: Callable[[], None] | None = None,
    ) -> None:
        self.plan = plan
        self._on_end = on_end  # the service's clean-up, when the stream ends in any way
        self._first = first
        self._open_next = open_next
        self._writer = writer
        self._metrics = metrics
        self._completion_id: str | None = None  # the upstream's, else made when needed
        self._sent_any = False
        self._said_anything = False  # any text reached the caller during this turn
        self._produced: list[StoredMessage] = []  # finished tool steps of this turn
        self._step_text: list[str] = []  # text of the current step that reached the caller
        self._model: str | None = plan.model
        self._tail = ""  # the last text that reached the caller (for joins)
        self._join_next = False  # the next text starts a new segment
        self._handed_back: list[dict[str, Any]] = []  # the caller's tool calls, passed on
        self._usages: list[UpstreamUsage] = []  # one per model call of this turn
        # Usage is always asked of the upstream (prompt cache figures); the caller gets
        # the usage chunk only if it asked for it too.
        self._forward_usage = bool((plan.body.get("stream_options") or {}).get("include_usage"))
        # Nothing to write and no tool step after the upstream's [DONE]: ours leaves with
        # the last words, in the same write.
        self._done_with_last_batch = plan.turn is None and plan.tools is None
        self._done_sent = False
        self._reasoned: list[CompletionStream] = []  # with keep_reasoning: this turn's streams

    async def frames(self) -> AsyncIterator[bytes]:
        plan, metrics = self.plan, self._metrics
        metrics.active_streams.inc()
        finished = False
        stream: CompletionStream | None = None
        reply = ReplyAccumulator()
        try:
            if plan.opening_filler:  # the upstream has not answered yet: our own id
                if plan.emit_meta and plan.meta:
                    yield self._meta_frames(plan.meta)
                filler = speakable(plan.opening_filler)
                yield self._speak(filler)
                self._said([filler])
                self._join_next = True
            stream = self._opened(await self._first())
            if not plan.opening_filler:
                self._adopt_ids(stream.first_events)
                if plan.emit_meta and plan.meta:
                    yield self._meta_frames(plan.meta)
            body = plan.body
            belt = plan.tools
            for step in range(belt.max_steps if belt else 1):
                reply = ReplyAccumulator()
                async for out in self._relay_step(stream, reply, step == 0):
                    yield out
                stream.close()
                calls = [reply.tool_calls[i] for i in sorted(reply.tool_calls)]
                if belt is not None and calls:
                    self._handed_back = handed_back(belt, calls)
                    if self._handed_back:  # the caller's tools: the reply is theirs to act on
                        yield self._tool_call_frames(self._handed_back)
                        break
                if belt is None or not calls or step + 1 == belt.max_steps:
                    break  # an answer, or the step limit: what was said is the reply
                results_frames, body = await self._run_tools(body, calls, step)
                if results_frames:
                    yield results_frames
                stream = self._opened(await self._open_next(body))
            finished = True
            if plan.turn is not None:
                answer = reply.answer()
                answer.content = self._segment_text()
                final = self._final_message(reply, plan.turn)
                # Shielded: a caller leaving now must not cancel the write of what it heard.
                await asyncio.shield(
                    self._writer.finished(plan.turn, [*self._produced, final], answer)
                )
            if not self._done_sent:
                yield DONE_FRAME
        except UpstreamError as exc:
            log.warning("upstream failed mid-stream: %s", exc.message)
            turnlog.failed(exc.message)
            yield error_frame(exc) + DONE_FRAME
        finally:
            try:
                if stream is not None:
                    stream.close()
                metrics.active_streams.dec()
                self._observe()
                if plan.turn is not None and not finished:
                    self._writer.interrupted(plan.turn, self._heard())
            finally:
                if self._on_end is not None:
                    self._on_end()

    def _final_message(self, reply: ReplyAccumulator, turn: PendingTurn) -> StoredMessage:
        """The reply as the history keeps it: what was said, and the calls handed back."""
        final = StoredMessage(
            role="assistant", content=self._segment_text(), request_id=turn.call.request_id
        )
        if self._handed_back:
            final.tool_calls = self._handed_back
            final.content = final.content or None
        elif self.plan.tools is None and reply.tool_calls:  # pass-through tools: keep them
            final = reply.assistant_message(final.request_id)
            final.content = self._segment_text() or final.content
        final.reasoning_content = self._reasoning()
        return final

    async def _relay_step(
        self, stream: CompletionStream, reply: ReplyAccumulator, first_step: bool
    ) -> AsyncIterator[bytes]:
        belt = self.plan.tools
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
                metainfo = upstream_meta_info(payload)
                if metainfo is not None:  # the upstream's meta.info: same rule as ours
                    if self.plan.emit_meta:
                        out.append(self._meta_frames([metainfo]))
                    continue
                calls_before = len(reply.tool_calls)
                text = reply.feed(payload)
                if reply.done or reply.error is not None:
                    break
                if reply.usage_only and not self._forward_usage:
                    continue
                if belt is not None and (reply.tool_calls or reply.finish_reason == "tool_calls"):
                    if len(reply.tool_calls) > calls_before and not (self._said_anything or texts):
                        name = reply.tool_calls[min(reply.tool_calls)]["function"]["name"]
                        if belt.runs(name):  # a server-side tool: say something meanwhile
                            filler = self._joined(belt.filler_for(name), texts)
                            out.append(self._speak(filler))
                            texts.append(filler)
                    elif text:
                        text = self._joined(text, texts)
                        out.append(self._speak(text))
                        texts.append(text)
                    continue  # tool-call deltas and their finish: sent whole at the step's end
                if text and self._join_next:
                    joined = self._joined(text, texts)
                    if joined != text:
                        payload, text = _with_content(payload, joined), joined
                out.append(frame(payload))
                if text:
                    texts.append(text)
            if reply.done and reply.error is None and self._done_with_last_batch:
                out.append(DONE_FRAME)
                self._done_sent = True
            if out:
                self._sent_any = True
                yield out[0] if len(out) == 1 else b"".join(out)
                if texts:  # reached the caller
                    self._said(texts)
            if reply.error is not None:
                raise reply.error
            if reply.done:
                if reply.usage is not None:
                    self._usages.append(reply.usage)
                report_usage(reply.model, reply.usage)
                # Closed now (the upstream's end of stream is not read), not left to the
                # loop's finaliser, which would start a task for it.
                await batches.aclose()
                return
            batch = await anext(batches, None)
        raise UpstreamError("upstream stream ended before [DONE]")

    async def _run_tools(
        self, body: dict[str, Any], calls: list[dict[str, Any]], index: int
    ) -> tuple[bytes, dict[str, Any]]:
        belt = self.plan.tools
        assert belt is not None
        request_id = self.plan.turn.call.request_id if self.plan.turn else None
        step = await run_step(belt, calls, self._segment_text(), request_id, self._metrics)
        self._produced += step.messages
        self._step_text = []
        self._join_next = True  # the next step's words follow what was said
        frames = b""
        if step.visible and self.plan.emit_meta:
            frames = self._meta_frames(step.visible)
        self.plan.meta.extend(step.visible)
        return frames, next_body(body, step, index, belt)

    def _opened(self, stream: CompletionStream) -> CompletionStream:
        if self.plan.keep_reasoning:
            self._reasoned.append(stream)
        return stream

    def _reasoning(self) -> str | None:
        """What the model reasoned in this turn, if its profile keeps it (else None)."""
        text = "".join(stream.reasoning_text for stream in self._reasoned)
        return text or None

    def _said(self, texts: list[str]) -> None:
        """``texts`` reached the caller."""
        self._step_text += texts
        self._tail = texts[-1]
        self._said_anything = True

    def _joined(self, text: str, pending: list[str]) -> str:
        """``text`` prefixed as a new sentence when it starts a new segment."""
        if not self._join_next or not text:
            return text
        self._join_next = False
        return separator(pending[-1] if pending else self._tail, text) + text

    def _segment_text(self) -> str:
        """The current step's words as stored (without the joining space in front)."""
        return "".join(self._step_text).lstrip()

    def _adopt_ids(self, first_events: list[bytes]) -> None:
        """Events the proxy adds carry the stream's own completion id and model."""
        for payload in first_events[:1]:
            if payload == DONE:
                return
            try:
                event = orjson.loads(payload)
            except orjson.JSONDecodeError:
                return
            if isinstance(event, dict) and isinstance(event.get("id"), str) and event["id"]:
                self._completion_id = event["id"]
                if isinstance(event.get("model"), str):
                    self._model = event["model"]

    def _stream_id(self) -> str:
        """The completion id of the events the proxy adds (the upstream's once known)."""
        if self._completion_id is None:
            self._completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        return self._completion_id

    def _meta_frames(self, items: list[dict[str, Any]]) -> bytes:
        return b"".join(meta_info_frame(self._stream_id(), m, self._model) for m in items)

    def _tool_call_frames(self, calls: list[dict[str, Any]]) -> bytes:
        """The caller's tool calls, whole, then their finish chunk."""
        delta: dict[str, Any] = {
            "tool_calls": [
                {
                    "index": index,
                    "id": call["id"],
                    "type": "function",
                    "function": {
                        "name": call["function"]["name"],
                        "arguments": call["function"]["arguments"],
                    },
                }
                for index, call in enumerate(calls)
            ]
        }
        if not self._sent_any:
            delta["role"] = "assistant"
        self._sent_any = True
        head = json_frame(chunk_event(self._stream_id(), self._model, delta, None))
        return head + json_frame(chunk_event(self._stream_id(), self._model, {}, "tool_calls"))

    def _speak(self, text: str) -> bytes:
        """A content chunk the proxy itself says (a filler)."""
        delta: dict[str, Any] = {"content": text}
        if not self._sent_any:
            delta["role"] = "assistant"
        self._sent_any = True
        return json_frame(chunk_event(self._stream_id(), self._model, delta, None))

    def _heard(self) -> list[StoredMessage]:
        """What the caller received, for a reply cut short."""
        heard = list(self._produced)
        if self._step_text:
            heard.append(
                StoredMessage(
                    role="assistant",
                    content=self._segment_text(),
                    request_id=self.plan.turn.call.request_id if self.plan.turn else None,
                    interrupted=True,
                    reasoning_content=self._reasoning(),
                )
            )
        return heard  # finished tool steps stay: those calls happened

    def _observe(self) -> None:
        metrics, model = self._metrics, self.plan.model
        elapsed = time.perf_counter() - self.plan.received_at
        series = metrics.for_model(model)
        series.duration.observe(elapsed)
        for usage in self._usages:
            series.input_tokens.observe(usage.prompt_tokens)
            series.output_tokens.observe(usage.completion_tokens)
            series.prompt_tokens.inc(usage.prompt_tokens)
            series.cached_tokens.inc(usage.cached_tokens)


def _with_content(payload: bytes, text: str) -> bytes:
    """The upstream chunk with its text replaced (a joining space added in front)."""
    event = orjson.loads(payload)
    for choice in event["choices"]:
        if choice.get("index", 0) == 0:
            choice["delta"]["content"] = text
            break
    return orjson.dumps(event)
