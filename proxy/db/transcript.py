"""Write-behind persistence of the durable transcript, never awaited on the request path.

``submit`` spools the rows durably and returns; a background task writes them in
batches, one transaction per batch, in submission order (see ``proxy.db.write_behind``:
a database outage, a restart or a crash of the process costs nothing but disk).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from proxy.call import CallContext
from proxy.context.history import StoredMessage
from proxy.db.base import without_nul
from proxy.db.repositories import TaskRepository, TranscriptRepository
from proxy.db.write_behind import WriteBehindQueue

_TIMES = ("created_at", "last_activity_at")  # datetime fields, stored as ISO text in the spool


@dataclass(slots=True)
class _Item:
    task_id: str
    task: dict[str, Any] | None = None  # Task fields to touch (message items only)
    rows: list[dict[str, Any]] | None = None  # messages to upsert
    update: dict[str, Any] | None = None  # {"id", "content", "interrupted"}: a correction
    at: float = field(default_factory=time.time)  # when it was accepted (erasure check)


def _revive(fields: dict[str, Any] | None) -> dict[str, Any] | None:
    if fields is not None:
        for name in _TIMES:
            if isinstance(fields.get(name), str):
                fields[name] = datetime.fromisoformat(fields[name])
    return fields


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
    queue_name = "transcript"

    def _encode(self, item: _Item) -> bytes:
        return orjson.dumps(item)  # a dataclass, natively: asdict deep-copies (~100 µs)

    def _decode(self, body: bytes) -> _Item:
        item = _Item(**orjson.loads(body))
        _revive(item.task)
        for row in item.rows or ():
            _revive(row)
        return item

    def submit(
        self,
        call: CallContext,
        messages: list[StoredMessage],
        *,
        profile: str | None = None,
        started_at: float | None = None,
    ) -> bool:
        """Queue a task's new messages; False if not queued (no task id, full, or closed).

        ``started_at``: when the turn that made them began; an erasure after it discards
        them (else the time they are queued)."""
        if call.task_id is None or not messages:
            return False
        known = {"app_id": call.app_id, "room_id": call.room_id, "user_id": call.user_id}
        task: dict[str, Any] = {k: v for k, v in known.items() if v is not None}
        if profile is not None:
            task["profile_name"] = profile
        task["last_activity_at"] = _utc(time.time())  # when it happened, not when written
        rows = [_row(call.task_id, m) for m in messages]
        item = _Item(call.task_id, task=task, rows=rows)
        if started_at is not None:
            item.at = started_at
        return self._put(item)

    def submit_update(self, task_id: str, message_id: str, content: Any, interrupted: bool) -> bool:
        """Queue an in-place correction of a stored message (905), after what is queued."""
        update = {"id": message_id, "content": without_nul(content), "interrupted": interrupted}
        return self._put(_Item(task_id, update=update))

    async def _write(self, session: AsyncSession, batch: list[_Item]) -> None:
        tasks: dict[str, dict[str, Any]] = {}
        for item in batch:
            if item.task is not None:
                tasks.setdefault(item.task_id, {}).update(item.task)
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
