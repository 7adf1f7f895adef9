"""Background summarisation: older turns become one pinned summary, off the request path.

When a task's stored history passes ``summary_threshold_turns``, every turn except the
newest ``summary_keep_turns`` is summarised by the model the route ``summary_model`` names;
the summary is pinned and those turns leave the window. A failed summary changes nothing.

The request goes through the ``UpstreamRouter`` like a chat turn: the same targets,
fallback, hedging, cooldown and timeouts. It streams, as voice turns do, so a target is
held to the first-token timeout and the answer then has the total timeout (a
non-streaming call would have to fit the whole summary in the first-token timeout).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging

import orjson

from proxy.context.budget import group_turns
from proxy.context.history import HistoryStore, StoredMessage
from proxy.context.matching import content_text
from proxy.errors import UpstreamError
from proxy.settings import HistoryPolicy
from proxy.upstream.routes import CompletionStream, UpstreamRouter
from proxy.upstream.sse import DONE

log = logging.getLogger(__name__)

INSTRUCTIONS = (
    "You maintain the memory of a spoken conversation between a user and a voice "
    "assistant. Rewrite the previous summary and the new transcript into one short "
    "summary (at most 150 words) in the conversation's language. Keep names, numbers, "
    "decisions, open questions and the user's preferences. Replies marked (interrupted) "
    "were cut off: the user heard only the text shown. Answer with the summary only."
)
MAX_MESSAGES_READ = 2000


def transcript(messages: list[StoredMessage]) -> str:
    lines = []
    for message in messages:
        text = content_text(message.content)
        if message.role == "assistant" and message.tool_calls:
            calls = ", ".join(
                f"{c.get('function', {}).get('name')}({c.get('function', {}).get('arguments')})"
                for c in message.tool_calls
            )
            lines.append(f"Assistant called: {calls}")
        if not text:
            continue
        label = {"user": "User", "assistant": "Assistant", "tool": "Tool result"}.get(
            message.role, "Note"
        )
        if message.interrupted:
            label += " (interrupted)"
        lines.append(f"{label}: {text}")
    return "\n".join(lines)


class Summariser:
    def __init__(self, store: HistoryStore, router: UpstreamRouter, policy: HistoryPolicy) -> None:
        self._store = store
        self._router = router
        self._default_policy = policy
        self._running: dict[str, asyncio.Task[None]] = {}
        self.failures = 0

    def maybe_schedule(
        self, task_id: str, stored_messages: int, policy: HistoryPolicy | None = None
    ) -> None:
        """Called after a turn is written; returns at once."""
        policy = policy or self._default_policy
        if not policy.summarise or task_id in self._running:
            return
        # Two messages a turn is the common shape; the exact count happens in the task.
        if stored_messages < 2 * policy.summary_threshold_turns:
            return
        # A context of its own: the summary is not part of the turn that scheduled it (its
        # trace span and turn log).
        task = asyncio.create_task(self._summarise(task_id, policy), context=contextvars.Context())
        self._running[task_id] = task
        task.add_done_callback(lambda _: self._running.pop(task_id, None))

    async def _summarise(self, task_id: str, policy: HistoryPolicy) -> None:
        try:
            history = await self._store.load(task_id, MAX_MESSAGES_READ)
            turns = group_turns(history.messages)
            if len(turns) < policy.summary_threshold_turns:
                return
            older = [m for turn in turns[: -policy.summary_keep_turns] for m in turn]
            if not older:
                return
            summary = await self._ask(policy.summary_model, history.summary, older)
            if summary:
                await self._store.set_summary(task_id, summary, older[-1].id)
                log.info("summarised %d messages", len(older), extra={"task_id": task_id})
        except Exception as exc:
            self.failures += 1
            log.warning(
                "summary failed; history left as it was: %r", exc, extra={"task_id": task_id}
            )

    async def _ask(
        self, model_name: str | None, previous: str | None, messages: list[StoredMessage]
    ) -> str:
        if not model_name:
            log.warning("summarisation is on but no summary_model is set")
            return ""
        if self._router.table.plan(model_name) is None:
            log.warning("summary_model %r names no upstream", model_name)
            return ""
        text = (f"Previous summary: {previous}\n\n" if previous else "") + transcript(messages)
        body = {
            "model": model_name,
            "stream": True,
            "temperature": 0,
            "messages": [
                {"role": "system", "content": INSTRUCTIONS},
                {"role": "user", "content": text},
            ],
        }
        stream = await self._router.open_stream(body)
        try:
            return (await streamed_text(stream)).strip()
        finally:
            stream.close()

    async def close(self) -> None:
        for task in list(self._running.values()):
            task.cancel()
        if self._running:
            await asyncio.wait(list(self._running.values()), timeout=1)


async def streamed_text(stream: CompletionStream) -> str:
    """The text of a streamed answer (choice 0); an error event raises ``UpstreamError``."""
    parts = [_delta_text(payload) for payload in stream.first_events]
    async for batch in stream.batches():
        parts.extend(_delta_text(payload) for payload in batch)
    return "".join(parts)


def _delta_text(payload: bytes) -> str:
    if payload == DONE:
        return ""
    event = orjson.loads(payload)
    if not isinstance(event, dict):
        return ""
    if "error" in event:
        raise UpstreamError("the upstream failed while summarising")
    choices = event.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else None
    delta = choice.get("delta") if isinstance(choice, dict) else None
    content = delta.get("content") if isinstance(delta, dict) else None
    return content if isinstance(content, str) else ""
