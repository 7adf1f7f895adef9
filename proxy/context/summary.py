"""Background summarisation: older turns become one pinned summary, off the request path.

When a task's stored history passes ``summary_threshold_turns``, every turn except the
newest ``summary_keep_turns`` is summarised by a model (langchain-openai ``ChatOpenAI``
against the route named by ``summary_model``); the summary is pinned and those turns
leave the window. A failed summary changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from proxy.context.budget import group_turns
from proxy.context.history import HistoryStore, StoredMessage
from proxy.context.matching import content_text
from proxy.settings import HistoryPolicy, UpstreamTarget
from proxy.upstream.routes import RouteTable

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
    def __init__(self, store: HistoryStore, table: RouteTable, policy: HistoryPolicy) -> None:
        self._store = store
        self._table = table
        self._policy = policy
        self._running: dict[str, asyncio.Task[None]] = {}
        self._model: Any = None
        self.failures = 0

    def _target(self) -> UpstreamTarget | None:
        if not self._policy.summary_model:
            return None
        targets = self._table.resolve(self._policy.summary_model)
        return targets[0] if targets else None

    def maybe_schedule(self, task_id: str, stored_messages: int) -> None:
        """Called after a turn is written; returns at once."""
        policy = self._policy
        if not policy.summarise or task_id in self._running:
            return
        # Two messages a turn is the common shape; the exact count happens in the task.
        if stored_messages < 2 * policy.summary_threshold_turns:
            return
        task = asyncio.create_task(self._summarise(task_id))
        self._running[task_id] = task
        task.add_done_callback(lambda _: self._running.pop(task_id, None))

    async def _summarise(self, task_id: str) -> None:
        try:
            history = await self._store.load(task_id, MAX_MESSAGES_READ)
            turns = group_turns(history.messages)
            if len(turns) < self._policy.summary_threshold_turns:
                return
            older = [m for turn in turns[: -self._policy.summary_keep_turns] for m in turn]
            if not older:
                return
            summary = await self._ask(history.summary, older)
            if summary:
                await self._store.set_summary(task_id, summary, older[-1].id)
                log.info("summarised %d messages", len(older), extra={"task_id": task_id})
        except Exception as exc:
            self.failures += 1
            log.warning(
                "summary failed; history left as it was: %r", exc, extra={"task_id": task_id}
            )

    async def _ask(self, previous: str | None, messages: list[StoredMessage]) -> str:
        from langchain_core.messages import HumanMessage, SystemMessage

        model = self._chat_model()
        if model is None:
            return ""
        text = (f"Previous summary: {previous}\n\n" if previous else "") + transcript(messages)
        result = await model.ainvoke([SystemMessage(INSTRUCTIONS), HumanMessage(text)])
        return str(result.content).strip()

    def _chat_model(self) -> Any:
        if self._model is None:
            target = self._target()
            if target is None:
                log.warning("summarisation is on but summary_model names no upstream route")
                return None
            from langchain_openai import ChatOpenAI

            self._model = ChatOpenAI(
                model=target.model or str(self._policy.summary_model),
                base_url=target.base_url,
                api_key=target.resolved_api_key() or "unused",  # type: ignore[arg-type]
                timeout=target.total_timeout,
                max_retries=0,  # the next turn tries again anyway
                temperature=0,
            )
        return self._model

    async def close(self) -> None:
        for task in list(self._running.values()):
            task.cancel()
        if self._running:
            await asyncio.wait(list(self._running.values()), timeout=1)
