"""Erasure is final: a tombstone per erased task, checked by every write-behind writer.

``DELETE /admin/tasks/...`` on one replica must not be undone by rows another replica
(or this one's spool) accepted before the erasure and writes after it. The eraser
records a tombstone and deletes the task in one transaction; every writer transaction
reads the tombstones of its batch's tasks and discards what it accepted at or before
the erasure time. The two are serialised per task, so neither can slip past the other:

* PostgreSQL: a transaction-scoped advisory lock per task key, exclusive for the
  eraser and shared for the writers (writers of different tasks never wait);
* SQLite: a database has one writer at a time, and a writer whose read snapshot is
  older than the eraser's commit cannot write (``SQLITE_BUSY_SNAPSHOT``: retried).

The erasure time is the eraser's clock, the acceptance time the accepting replica's:
keep the replicas' clocks in sync (NTP), as for any multi-replica timestamp.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from proxy.db.models import TaskErasure
from proxy.db.repositories import TaskRepository, _insert

_LOCK_SHARED = text(
    "SELECT count(pg_advisory_xact_lock_shared(hashtextextended(k, 0))) "
    "FROM unnest(CAST(:keys AS text[])) AS k"
)
_LOCK_EXCLUSIVE = text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))")


def _postgres(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


async def erased_tasks(session: AsyncSession, task_ids: Iterable[str]) -> dict[str, float]:
    """Inside a writer's transaction: lock these tasks against erasure (until commit) and
    return the erasure time of those that were erased. An empty id is no task (usage rows
    are queued under none): nothing to lock or look up for it."""
    keys = sorted({task_id for task_id in task_ids if task_id})
    if not keys:
        return {}
    if _postgres(session):
        await session.execute(_LOCK_SHARED, {"keys": keys})
    rows = await session.execute(
        select(TaskErasure.task_id, TaskErasure.erased_at).where(TaskErasure.task_id.in_(keys))
    )
    return {task_id: float(erased_at) for task_id, erased_at in rows}


async def erase_task(session: AsyncSession, task_id: str, *, at: float | None = None) -> bool:
    """Inside the eraser's transaction: tombstone the task and delete its record.
    True if there was a record to delete."""
    if _postgres(session):
        await session.execute(_LOCK_EXCLUSIVE, {"key": task_id})
    insert = _insert(session, TaskErasure).values(
        task_id=task_id, erased_at=time.time() if at is None else at
    )
    await session.execute(
        insert.on_conflict_do_update(
            index_elements=["task_id"], set_={"erased_at": insert.excluded.erased_at}
        )
    )
    return await TaskRepository(session).delete(task_id)
