"""The admin API and CLI address a task by its task key or by the engine's bare TaskId.

The engine names its app (``X-Sdk-App-Id``), so its tasks live under ``<app>:<task>``
while an operator usually has only the TaskId (from the engine's console or a
callback). A bare id resolves to the one task that has it, live (the history store)
or recorded (the database); several apps having it is a 409 listing their task keys,
none a 404. An explicit ``app_id`` (or a task key) is used as given: that is how
meta.info is queued for a task before its first turn, so that a 2xx never lands in a
queue no turn reads.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from proxy.call import valid_app_id
from proxy.context.task_lookup import MAX_MATCHES, names_task
from proxy.db.models import Task
from proxy.errors import Conflict, NotFound


class AmbiguousTask(Conflict):
    """Several apps have a task with this id: the error lists their task keys."""

    code = "ambiguous_task"

    def __init__(self, task_id: str, keys: list[str]) -> None:
        shown = ", ".join(keys)
        super().__init__(
            f"several apps have a task {task_id!r} ({shown}): name one with ?app_id= "
            "or use its task key",
            param="app_id",
        )
        self.task_keys = keys

    def envelope(self) -> dict[str, Any]:
        envelope = super().envelope()
        envelope["error"]["task_keys"] = self.task_keys
        return envelope


def is_task_key(task_id: str) -> bool:
    """``<app id>:<task id>``: already scoped, used as given."""
    app_id, colon, rest = task_id.partition(":")
    return bool(colon and rest) and valid_app_id(app_id) == app_id


async def recorded_task_keys(session: AsyncSession, task_id: str) -> list[str]:
    """Task keys in the database that the bare ``task_id`` names."""
    escaped = task_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    query = (
        select(Task.task_id)
        .where(or_(Task.task_id == task_id, Task.task_id.like(f"%:{escaped}", escape="\\")))
        .order_by(Task.task_id)
        .limit(MAX_MATCHES * 4)  # a LIKE match may still be another app's longer id
    )
    keys = (await session.scalars(query)).all()
    return [key for key in keys if names_task(key, task_id)][:MAX_MATCHES]


def choose(task_id: str, keys: list[str]) -> str:
    """The one task key among ``keys`` (found for ``task_id``); 404 or 409 otherwise."""
    if not keys:
        raise NotFound(
            f"no task {task_id!r} (no app has it live or recorded). For a task that has "
            "had no turn yet, name its app with ?app_id= (the engine's SdkAppId)"
        )
    if len(keys) > 1:
        raise AmbiguousTask(task_id, keys)
    return keys[0]
