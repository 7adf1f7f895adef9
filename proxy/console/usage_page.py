"""The console's usage page: tokens, requests and cost by app, key, model or day."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from proxy.api.admin_db import transaction
from proxy.console import charts
from proxy.console.session import Session
from proxy.console.web import PREFIX, current_session, page
from proxy.services import services
from proxy.usage.aggregate import GroupKey, UsageFilter, aggregate

router = APIRouter(prefix=PREFIX, include_in_schema=False)
SessionDep = Annotated[Session, Depends(current_session)]

GROUPS: dict[str, GroupKey] = {
    "day": "day",
    "app": "app",
    "key": "key",
    "model": "model",
    "route": "route",
    "task": "task",
}
LABELS = {"app": "app_id", "model": "model", "route": "route", "task": "task_id", "day": "day"}


def _day(value: str) -> datetime | None:
    try:
        return datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        return None


def _label(group: str) -> Any:
    if group == "key":
        return lambda item: item.get("key_name") or item.get("key_id") or "(no key)"
    return lambda item: item.get(LABELS[group]) or "(none)"


@router.get("/usage")
async def usage(request: Request, session: SessionDep) -> Response:
    query = request.query_params
    group = query.get("group_by", "day") if query.get("group_by") in GROUPS else "day"
    start = _day(query.get("from", ""))
    end = _day(query.get("to", ""))
    chosen = {
        name: query.get(name, "").strip()[:128]
        for name in ("app_id", "key_id", "model", "from", "to")
        if query.get(name, "").strip()
    }
    filters = UsageFilter(
        app_id=chosen.get("app_id"),
        key_id=chosen.get("key_id"),
        model=chosen.get("model"),
        start=start,
        end=end + timedelta(days=1) if end else None,  # the "to" day is included
    )
    with contextlib.suppress(Exception):  # rows still queued belong on the page
        await services(request).usage.writer.flush(timeout=2.0)
    async with transaction(request) as db:
        items, totals = await aggregate(db, filters, [GROUPS[group]])
    return page(
        request,
        "usage.html",
        session,
        items=items,
        totals=totals,
        group=group,
        groups=list(GROUPS),
        chosen=chosen,
        label=_label(group),
        bars=charts.usage_bars(items, _label(group)),
        parts=charts.USAGE_PARTS,
    )
