"""Console pages: login, tasks (live), a task's timeline (live)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from sqlalchemy import select
from sse_starlette.sse import EventSourceResponse
from starlette.responses import RedirectResponse, Response

from proxy.api.admin_db import transaction
from proxy.api.admin_tasks import _flush_transcripts
from proxy.call import MAX_TASK_KEY
from proxy.console import charts
from proxy.console.session import COOKIE, LIFETIME_SECONDS, Session
from proxy.console.timeline import build_rounds
from proxy.console.web import PREFIX, current_session, page, signer
from proxy.db.models import TurnRecord
from proxy.db.repositories import EventRepository, TaskFilter, TaskRepository, TranscriptRepository
from proxy.errors import NotFound, Overloaded
from proxy.services import services

log = logging.getLogger(__name__)
router = APIRouter(prefix=PREFIX, include_in_schema=False)
SessionDep = Annotated[Session, Depends(current_session)]

LIVE_SECONDS = 2.0  # how often a live page re-reads the database
MAX_LIVE_PAGES = 50  # open live pages per process (each re-reads the database)
TASKS_SHOWN = 100
FILTERS = ("app_id", "room_id", "user_id", "status", "since")
SINCE = {"1h": timedelta(hours=1), "24h": timedelta(days=1), "7d": timedelta(days=7)}


@router.get("")
async def home() -> Response:
    return RedirectResponse(PREFIX + "/tasks", status_code=303)


@router.get("/login")
async def login_page(request: Request) -> Response:
    enabled = services(request).settings.admin_token is not None
    return page(request, "login.html", None, enabled=enabled, failed=False)


@router.post("/login")
async def log_in(request: Request) -> Response:
    from proxy.console.web import MAX_FORM_BYTES, read_body

    sessions = signer(request)
    raw = (await read_body(request, MAX_FORM_BYTES)).decode("utf-8", errors="replace")
    from urllib.parse import parse_qs

    token = (parse_qs(raw).get("token") or [""])[-1]
    admin = services(request).settings.admin_token
    if (
        sessions is None
        or admin is None
        or not sessions.token_matches(admin.get_secret_value(), token)
    ):
        await asyncio.sleep(0.5)  # slows guessing down
        return page(request, "login.html", None, 401, enabled=admin is not None, failed=True)
    value, _ = sessions.issue()
    response = RedirectResponse(PREFIX + "/tasks", status_code=303)
    response.set_cookie(
        COOKIE,
        value,
        max_age=LIFETIME_SECONDS,
        path=PREFIX,
        httponly=True,
        samesite="strict",
        secure=_https(request),
    )
    return response


@router.post("/logout")
async def log_out(request: Request, session: SessionDep) -> Response:
    from proxy.console.web import read_form

    await read_form(request, session)
    response = RedirectResponse(PREFIX + "/login", status_code=303)
    response.delete_cookie(COOKIE, path=PREFIX, httponly=True, samesite="strict")
    return response


def _https(request: Request) -> bool:
    forwarded = request.headers.get("x-forwarded-proto", "")
    return request.url.scheme == "https" or forwarded.split(",")[0].strip() == "https"


# Tasks.


def _task_filter(request: Request) -> tuple[TaskFilter, dict[str, str]]:
    chosen = {
        name: request.query_params.get(name, "").strip()[:128]
        for name in FILTERS
        if request.query_params.get(name, "").strip()
    }
    status = chosen.get("status")
    since = SINCE.get(chosen.get("since", ""))
    filters = TaskFilter(
        app_id=chosen.get("app_id"),
        room_id=chosen.get("room_id"),
        user_id=chosen.get("user_id"),
        active=True if status == "live" else False if status == "ended" else None,
        started_after=datetime.now(UTC) - since if since else None,
    )
    return filters, chosen


async def _task_rows(request: Request, filters: TaskFilter) -> dict[str, Any]:
    await _flush_transcripts(request, required=False)
    async with transaction(request) as session:
        found = await TaskRepository(session).search(filters, limit=TASKS_SHOWN)
        return {"tasks": list(found.items), "total": found.total}


@router.get("/tasks")
async def tasks(request: Request, session: SessionDep) -> Response:
    filters, chosen = _task_filter(request)
    rows = await _task_rows(request, filters)
    query = request.url.query
    return page(request, "tasks.html", session, chosen=chosen, live_query=query, **rows)


@router.get("/tasks-live")
async def tasks_live(request: Request, session: SessionDep) -> Response:
    filters, _ = _task_filter(request)

    async def render() -> str:
        rows = await _task_rows(request, filters)
        env = request.app.state.console_templates
        return str(env.get_template("task_rows.html").render(prefix=PREFIX, **rows))

    return _live(request, render)


# A task's timeline.


async def _timeline(request: Request, task_key: str) -> dict[str, Any]:
    if len(task_key) > MAX_TASK_KEY:
        raise NotFound("no such task")
    await _flush_transcripts(request, required=False)
    turn_logs = services(request).turn_logs
    if turn_logs is not None:
        with contextlib.suppress(Exception):
            await turn_logs.flush(timeout=2.0)
    async with transaction(request) as db:
        task = await TaskRepository(db).get(task_key)
        transcript = await TranscriptRepository(db).for_task(task_key)
        events = await EventRepository(db).for_task(task_key)
        metrics = await EventRepository(db).metrics_for_task(task_key)
        turns = (
            await db.scalars(
                select(TurnRecord)
                .where(TurnRecord.task_id == task_key)
                .order_by(TurnRecord.created_at, TurnRecord.id)
            )
        ).all()
    if task is None and not transcript and not turns:
        raise NotFound(f"no task {task_key!r}")
    rounds = build_rounds(transcript, turns, events, metrics)
    scale = charts.latency_scale(rounds)
    return {
        "task_key": task_key,
        "task": task,
        "rounds": rounds,
        "bars": {r.number: charts.latency_segments(r, scale) for r in rounds},
        "parts": charts.LATENCY_PARTS,
        "scale": scale,
    }


@router.get("/tasks/{task_key:path}/live")
async def timeline_live(task_key: str, request: Request, session: SessionDep) -> Response:
    async def render() -> str:
        context = await _timeline(request, task_key)
        env = request.app.state.console_templates
        return str(env.get_template("rounds.html").render(prefix=PREFIX, **context))

    return _live(request, render)


@router.get("/tasks/{task_key:path}")
async def timeline(task_key: str, request: Request, session: SessionDep) -> Response:
    try:
        context = await _timeline(request, task_key)
    except NotFound:
        return page(request, "missing.html", session, 404, task_key=task_key)
    return page(request, "timeline.html", session, **context)


# Live updates: Server-Sent Events carrying re-rendered HTML when it changed.


# Renders still running after their page was left (see ``_render_to_the_end``).
_ORPHANED_RENDERS: set[asyncio.Future[str]] = set()


async def _render_to_the_end(render: Callable[[], Awaitable[str]]) -> str:
    """Render; when the page is left meanwhile, the render still finishes, unseen.

    Leaving a live page cancels its events. A database read cut off mid-statement keeps
    its SQLite connection's read snapshot until the garbage collector frees the cursor,
    and (before WAL mode, see ``proxy.db.session``) blocked every write meanwhile.
    """
    task = asyncio.ensure_future(render())
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        _ORPHANED_RENDERS.add(task)  # a strong reference until it ends
        task.add_done_callback(_orphan_ended)
        raise


def _orphan_ended(task: asyncio.Future[str]) -> None:
    _ORPHANED_RENDERS.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.debug("console live page: a render after the page was left: %r", task.exception())


def _live(request: Request, render: Callable[[], Awaitable[str]]) -> Response:
    state = request.app.state
    if getattr(state, "console_live_pages", 0) >= MAX_LIVE_PAGES:
        raise Overloaded("too many live console pages are open; reload later")

    async def events() -> AsyncIterator[dict[str, str]]:
        last = ""
        state.console_live_pages = getattr(state, "console_live_pages", 0) + 1
        try:
            while not services(request).shutting_down:
                try:
                    html = await _render_to_the_end(render)
                except Exception as exc:  # the database is down: say so, keep trying
                    log.warning("console live page: %r", exc)
                    yield {"event": "status", "data": "the database is unavailable; retrying"}
                else:
                    digest = hashlib.sha256(html.encode()).hexdigest()
                    if digest != last:
                        last = digest
                        yield {"event": "html", "data": html}
                await asyncio.sleep(LIVE_SECONDS)
        finally:
            state.console_live_pages -= 1

    return EventSourceResponse(events(), ping=15, headers={"cache-control": "no-store"})
