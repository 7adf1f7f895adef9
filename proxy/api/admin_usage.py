"""Admin API: usage aggregates (``GET /admin/usage``) and today's budget spend."""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import Annotated, Any, get_args

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from proxy.admin.models import as_utc
from proxy.api.admin_db import transaction
from proxy.errors import InvalidRequest
from proxy.services import services
from proxy.usage.aggregate import GroupKey, UsageFilter, aggregate

router = APIRouter()

GROUPS = get_args(GroupKey)
Filter = Annotated[str | None, Query(max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")]


class UsageAnswer(BaseModel):
    group_by: list[str]
    items: list[dict[str, Any]] = Field(
        description="One row per group: the group's columns, requests, prompt_tokens, "
        "cached_tokens, completion_tokens, total_tokens, cost."
    )
    totals: dict[str, Any]


def parse_groups(value: str | None) -> list[GroupKey]:
    groups: list[GroupKey] = []
    for name in (value or "").split(","):
        name = name.strip()
        if not name:
            continue
        if name not in GROUPS:
            raise InvalidRequest(
                f"group_by: unknown {name!r}; use a comma list of {', '.join(GROUPS)}",
                param="group_by",
            )
        if name not in groups:
            groups.append(name)  # type: ignore[arg-type]
    return groups


@router.get("/usage", summary="Token usage and cost, filtered and grouped", tags=["usage"])
async def get_usage(
    request: Request,
    app_id: Filter = None,
    key_id: Filter = None,
    model: Filter = None,
    task_id: Filter = None,
    start: Annotated[
        datetime | None, Query(alias="from", description="ISO 8601, inclusive (naive = UTC)")
    ] = None,
    end: Annotated[
        datetime | None, Query(alias="to", description="ISO 8601, exclusive (naive = UTC)")
    ] = None,
    group_by: Annotated[
        str | None, Query(max_length=100, description=f"Comma list of: {', '.join(GROUPS)}")
    ] = None,
) -> UsageAnswer:
    groups = parse_groups(group_by)
    writer = services(request).usage.writer
    # Rows still queued belong in the answer (if the database is down, the read says so).
    with contextlib.suppress(Exception):
        await writer.flush(timeout=2.0)
    filters = UsageFilter(app_id, key_id, model, task_id, as_utc(start), as_utc(end))
    async with transaction(request) as session:
        items, totals = await aggregate(session, filters, groups)
    return UsageAnswer(group_by=list(groups), items=items, totals=totals)
