"""Write-behind persistence of the durable transcript, never awaited on the request path.

``submit`` only appends to a bounded in-process buffer; a background task writes the
buffer in batches, one transaction per batch, in submission order (see
``proxy.db.write_behind``: a database outage costs nothing but memory, a full buffer
drops and counts).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from proxy.context.call import CallContext
from proxy.context.history import StoredMessage
from proxy.db.base import without_nul
from proxy.db.repositories import TaskRepository, TranscriptRepository
from proxy.db.write_behind import WriteBehindQueue


@dataclass(slots=True)
class _Item:
    task_id: str
    task: dict[str, Any] | None = None  # Task fields to touch (message items only)
    rows: list[dict[str, Any]] | None = None  # messages to upsert
    update: dict[str, Any] | None = None  # {"id", "content", "interrupted"}: a correction


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _row(task_id: str, m: StoredMessage) -> dict[str, Any]:
    return {
        "id": m.id,
        "task_id": task_id,
        "role": m.role,
        "content": without_nul(m.content),
        "name": without_nul(m.name),
        "tool_calls": without_nul(m.tool_calls),
        "tool_call_id": without_nul(m.tool_call_id),
        "request_id": without_nul(m.request_id),
        "interrupted": m.interrupted,
        "source": m.source,
        "created_at": _utc(m.created_at),
    }


class TranscriptWriter(WriteBehindQueue[_Item]):
    what = "transcript"

    def submit(
        self, call: CallContext, messages: list[StoredMessage], *, profile: str | None = None
    ) -> bool:
        """Queue a task's new messages; False if not queued (no task id, full, or closed)."""
        if call.task_id is None or not messages:
            return False
        known = {"app_id": call.app_id, "room_id": call.room_id, "user_id": call.user_id}
        task: dict[str, Any] = {k: v for k, v in known.items() if v is not None}
        if profile is not None:
            task["profile_name"] = profile
        task["last_activity_at"] = _utc(time.time())  # when it happened, not when written
        rows = [_row(call.task_id, m) for m in messages]
        return self._put(_Item(call.task_id, task=task, rows=rows))

    def submit_update(self, task_id: str, message_id: str, content: Any, interrupted: bool) -> bool:
        """Queue an in-place correction of a stored message (905), after what is queued."""
        update = {"id": message_id, "content": without_nul(content), "interrupted": interrupted}
        return self._put(_Item(task_id, update=update))

    async def _write(self, batch: list[_Item]) -> None:
        tasks: dict[str, dict[str, Any]] = {}
        for item in batch:
            if item.task is not None:
                tasks.setdefault(item.task_id, {}).update(item.task)
        async with self.sessions() as session, session.begin():
            task_repo, transcript = TaskRepository(session), TranscriptRepository(session)
            await task_repo.touch_many(tasks)
            rows: list[dict[str, Any]] = []  # consecutive new messages, upserted together
            ids: set[str] = set()
            for item in batch:
                for row in item.rows or ():
                    # Keep the order: an id seen again (a regenerated reply) waits its turn.
                    if row["id"] in ids:
                        await transcript.upsert(rows)
                        rows, ids = [], set()
                    rows.append(row)
                    ids.add(row["id"])
                if item.update is not None:  # after the rows queued before it
                    await transcript.upsert(rows)
                    rows, ids = [], set()
                    fields = dict(item.update)
                    await transcript.update(item.task_id, fields.pop("id"), **fields)
            await transcript.upsert(rows)
