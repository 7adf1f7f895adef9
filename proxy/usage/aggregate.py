"""Usage aggregates in SQL: sums of tokens, requests and cost, grouped and filtered."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from proxy.db.models import UsageRecord

GroupKey = Literal["app", "key", "model", "route", "task", "day"]
GROUP_COLUMNS: dict[str, list[Any]] = {
    "app": [UsageRecord.app_id],
    "key": [UsageRecord.key_id, UsageRecord.key_name],
    "model": [UsageRecord.model],
    "route": [UsageRecord.route],
    "task": [UsageRecord.task_id],
    "day": [UsageRecord.day],
}
MAX_GROUPS = 10_000  # rows one answer may hold


@dataclass(frozen=True, slots=True)
class UsageFilter:
    app_id: str | None = None
    key_id: str | None = None
    model: str | None = None
    task_id: str | None = None
    start: datetime | None = None  # inclusive
    end: datetime | None = None  # exclusive

    def conditions(self) -> list[ColumnElement[bool]]:
        conditions: list[ColumnElement[bool]] = []
        for column, value in (
            (UsageRecord.app_id, self.app_id),
            (UsageRecord.key_id, self.key_id),
            (UsageRecord.model, self.model),
            (UsageRecord.task_id, self.task_id),
        ):
            if value is not None:
                conditions.append(column == value)
        if self.start is not None:
            conditions.append(UsageRecord.created_at >= self.start)
        if self.end is not None:
            conditions.append(UsageRecord.created_at < self.end)
        return conditions


SUMS = (
    func.count().label("requests"),
    func.coalesce(func.sum(UsageRecord.prompt_tokens), 0).label("prompt_tokens"),
    func.coalesce(func.sum(UsageRecord.cached_tokens), 0).label("cached_tokens"),
    func.coalesce(func.sum(UsageRecord.completion_tokens), 0).label("completion_tokens"),
    func.coalesce(func.sum(UsageRecord.cost), 0.0).label("cost"),
)


def _figures(row: Any) -> dict[str, Any]:
    prompt, completion = int(row.prompt_tokens), int(row.completion_tokens)
    return {
        "requests": int(row.requests),
        "prompt_tokens": prompt,
        "cached_tokens": int(row.cached_tokens),
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "cost": round(float(row.cost), 9),
    }


async def aggregate(
    session: AsyncSession, filters: UsageFilter, group_by: list[GroupKey]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(one row per group, ordered by the groups; the totals over every group)."""
    conditions = filters.conditions()
    totals = (await session.execute(select(*SUMS).where(*conditions))).one()
    if not group_by:
        return [], _figures(totals)
    columns = [column for key in group_by for column in GROUP_COLUMNS[key]]
    query = (
        select(*columns, *SUMS)
        .where(*conditions)
        .group_by(*columns)
        .order_by(*columns)
        .limit(MAX_GROUPS)
    )
    rows = []
    for row in (await session.execute(query)).all():
        keys = {column.key: getattr(row, column.key) for column in columns}
        rows.append({**keys, **_figures(row)})
    return rows, _figures(totals)
