"""Keeping history to what the user heard: the engine's 905 "bot finished speaking" text.

A 905 carries the text the bot actually said in a round. It corrects the most recent
assistant turn whose text begins with it (marked ``interrupted`` when shorter). It can
arrive before that turn is written (the stream is still being committed, perhaps on
another replica): then it waits in the task's pending queue, and the next assistant
commit applies it. One that still matches nothing after a grace period is text the
proxy never generated (the welcome message, ``ServerPushText``): it is added to the
history as an assistant turn, because the model must know what the user heard it say.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from proxy.context.call import CallContext
from proxy.context.history import HistoryStore, StoredMessage
from proxy.context.matching import content_text, normalise
from proxy.db.transcript import TranscriptWriter

log = logging.getLogger(__name__)

RECENT_MESSAGES = 40  # how far back a 905 may reach


class SpokenTextReconciler:
    def __init__(
        self,
        store: HistoryStore,
        transcripts: TranscriptWriter | None,
        *,
        grace_seconds: float = 2.0,
    ) -> None:
        self._store = store
        self._transcripts = transcripts
        self._grace = grace_seconds
        self._tasks: set[asyncio.Task[None]] = set()
        self.corrected = 0
        self.appended = 0

    async def on_spoken(self, task_id: str, text: str, *, at: float) -> str:
        """Apply a 905; returns "corrected", "unchanged" or "pending"."""
        if not normalise(text):
            return "unchanged"  # nothing was said
        outcome = await self._correct(task_id, text)
        if outcome is not None:
            return outcome
        await self._store.push_pending(task_id, {"text": text, "at": at})
        self._spawn(self._settle_later(task_id))
        return "pending"

    async def before_commit(
        self, task_id: str, messages: list[StoredMessage]
    ) -> list[StoredMessage]:
        """A turn is about to be written: fold in any 905 that arrived ahead of it.

        A waiting 905 that the reply begins with corrects it; one the user heard before
        this turn started goes in front of it (its place in time); others keep waiting.
        """
        pending = await self._store.take_pending(task_id)
        if not pending:
            return messages
        reply = next((m for m in reversed(messages) if m.role == "assistant"), None)
        started = messages[0].created_at
        earlier: list[StoredMessage] = []
        for item in pending:
            text = item["text"]
            if reply is not None and _begins_with(reply, text):
                if normalise(text) != normalise(content_text(reply.content)):
                    reply.content, reply.interrupted = text, True
                    self.corrected += 1
            elif float(item["at"]) < started:
                earlier.append(_spoken_message(item))
                self.appended += 1
            else:
                await self._store.push_pending(task_id, item)
        return [*earlier, *messages]

    async def _correct(self, task_id: str, text: str) -> str | None:
        history = await self._store.load(task_id, RECENT_MESSAGES)
        for message in reversed(history.messages):
            if message.role != "assistant" or message.source == "spoken":
                continue
            if not _begins_with(message, text):
                continue
            if normalise(content_text(message.content)) == normalise(text):
                return "unchanged"
            await self._store.update_message(task_id, message.id, content=text, interrupted=True)
            if self._transcripts is not None:
                self._transcripts.submit_update(task_id, message.id, text, True)
            self.corrected += 1
            return "corrected"
        return None

    async def _settle_later(self, task_id: str) -> None:
        await asyncio.sleep(self._grace)
        await self._settle(task_id)

    async def _settle(self, task_id: str) -> None:
        """The grace is over: what still matches nothing was said outside any reply."""
        try:
            for item in await self._store.take_pending(task_id):
                if await self._correct(task_id, item["text"]) is None:
                    await self._append_spoken(task_id, item)
        except Exception as exc:
            log.error("could not apply spoken text: %r", exc, extra={"task_id": task_id})

    async def _append_spoken(self, task_id: str, item: dict[str, Any]) -> None:
        message = _spoken_message(item)
        await self._store.append(task_id, [message])
        if self._transcripts is not None:
            self._transcripts.submit(CallContext(task_id=task_id), [message])
        self.appended += 1

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Settle what is pending now rather than wait out the grace period."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2)


def _begins_with(message: StoredMessage, text: str) -> bool:
    generated = normalise(content_text(message.content))
    return bool(generated) and generated.startswith(normalise(text))


def _spoken_message(item: dict[str, Any]) -> StoredMessage:
    return StoredMessage(
        role="assistant", content=item["text"], source="spoken", created_at=float(item["at"])
    )
