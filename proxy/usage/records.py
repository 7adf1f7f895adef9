"""Usage rows: who a completion is charged to, and the write-behind queue that stores them."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from proxy.db.base import row_chunks, table_of
from proxy.db.models import UsageRecord
from proxy.db.write_behind import WriteBehindQueue
from proxy.upstream.usage import UpstreamUsage

MAX_NAME = 128  # route and model columns


@dataclass(frozen=True, slots=True)
class UsageOwner:
    """What a request's usage is attributed to."""

    route: str  # the model name the caller sent
    app_id: str | None = None
    key_id: str | None = None  # database id, "config:<name>" or "env" (never the key)
    key_name: str | None = None
    task_id: str | None = None  # the task key
    request_id: str | None = None


def usage_row(
    owner: UsageOwner, model: str | None, usage: UpstreamUsage, cost: float, at: datetime
) -> dict[str, Any]:
    return {
        "created_at": at,
        "day": at.astimezone(UTC).strftime("%Y-%m-%d"),
        "app_id": owner.app_id,
        "key_id": owner.key_id,
        "key_name": owner.key_name,
        "task_id": owner.task_id,
        "request_id": owner.request_id,
        "route": owner.route[:MAX_NAME],
        "model": (model or owner.route)[:MAX_NAME],
        "prompt_tokens": usage.prompt_tokens,
        "cached_tokens": usage.cached_tokens,
        "completion_tokens": usage.completion_tokens,
        "cost": cost,
    }


@dataclass(slots=True)
class _Usage:
    # Billing outlives a task's erasure: the record is queued under no task (a usage row
    # holds ids and counts, never content).
    row: dict[str, Any]
    task_id: str = ""
    at: float = field(default_factory=time.time)


class UsageWriter(WriteBehindQueue[_Usage]):
    """Usage rows are written in batches behind the request, like transcripts."""

    what = "usage"
    queue_name = "usage"
    acknowledged = False  # nobody waits on it: spooled in groups (GROUP_SECONDS)

    def submit(self, row: dict[str, Any]) -> bool:
        return self._put(_Usage(row))

    def _encode(self, item: _Usage) -> bytes:
        return orjson.dumps(item)  # a dataclass, natively: asdict deep-copies (~100 µs)

    def _decode(self, body: bytes) -> _Usage:
        item = _Usage(**orjson.loads(body))
        item.row["created_at"] = datetime.fromisoformat(item.row["created_at"])
        return item

    async def _write(self, session: AsyncSession, batch: list[_Usage]) -> None:
        rows = [item.row for item in batch]
        for chunk in row_chunks(rows):
            await session.execute(insert(table_of(UsageRecord)), list(chunk))


def now() -> datetime:
    return datetime.now(UTC)
