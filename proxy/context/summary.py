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
        self._default_policy = policy
        self._running: dict[str, asyncio.Task[None]] = {}
        self._models: dict[str, Any] = {}
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
        task = asyncio.create_task(self._summarise(task_id, policy))
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
        from langchain_core.messages import HumanMessage, SystemMessage

        model = self._chat_model(model_name)
        if model is None:
            return ""
        text = (f"Previous summary: {previous}\n\n" if previous else "") + transcript(messages)
        result = await model.ainvoke([SystemMessage(INSTRUCTIONS), HumanMessage(text)])
        return str(result.content).strip()

    def _chat_model(self, model_name: str | None) -> Any:
        """One ChatOpenAI per summary model, built on first use (off the request path)."""
        if not model_name:
            log.warning("summarisation is on but no summary_model is set")
            return None
        if model_name not in self._models:
            targets = self._table.resolve(model_name)
            if not targets:
                log.warning("summary_model %r names no upstream", model_name)
                return None
            from langchain_openai import ChatOpenAI

            target: UpstreamTarget = targets[0]
            self._models[model_name] = ChatOpenAI(
                model=target.model or model_name,
                base_url=target.base_url,
                api_key=target.resolved_api_key() or "unused",  # type: ignore[arg-type]
                timeout=target.total_timeout,
                max_retries=0,  # the next turn tries again anyway
                temperature=0,
            )
        return self._models[model_name]

    async def close(self) -> None:
        for task in list(self._running.values()):
            task.cancel()
        if self._running:
            await asyncio.wait(list(self._running.values()), timeout=1)
