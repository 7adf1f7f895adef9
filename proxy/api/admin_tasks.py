"""Admin API: conversation tasks (durable record, live history, callbacks, metrics).

A task is addressed by its task key, ``<app id>:<task id>`` when the engine named an
app (see ``proxy.call``); ``?app_id=`` with the engine's task id means the same;
the engine's bare TaskId finds the one app that has it (``admin_task_ids``).

Two views of a task: the live history in the history store (what the next request
builds on; operators may reset it or add context to it) and the durable record in
the database (task row, transcript, callback events, round metrics), written in the
background by the transcript writer, which is flushed before reading so the view is
current.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable
from datetime import datetime
from typing import Annotated, TypeVar

from fastapi import APIRouter, Depends, Path, Query, Request, Response, status

from proxy.admin.models import as_utc
from proxy.api.admin_db import transaction
from proxy.api.admin_task_ids import choose, is_task_key, recorded_task_keys
from proxy.api.schemas import (
    ContextMessageIn,
    EventOut,
    HistoryMessageOut,
    MetaInfoIn,
    MetricOut,
    Page,
    TaskDetail,
    TaskOut,
    TranscriptMessageOut,
)
from proxy.call import APP_ID_PATTERN, MAX_TASK_KEY, CallContext, task_key
from proxy.chat.meta import queue_for_task
from proxy.context.history import StoredMessage
from proxy.context.redis_errors import STORE_ERRORS
from proxy.db.erasure import erase_task
from proxy.db.repositories import (
    EventRepository,
    TaskFilter,
    TaskRepository,
    TranscriptRepository,
)
from proxy.errors import NotFound, ServiceUnavailable
from proxy.services import services

log = logging.getLogger(__name__)
router = APIRouter()

T = TypeVar("T")
MAX_MESSAGES_SHOWN = 1000

# Ids and filters as stored: bounded and no control characters (PostgreSQL refuses NUL
# in text, which would surface as "database unavailable"; a longer id would be kept live
# but refused by the durable transcript).
NO_CONTROL = r"^[^\x00-\x1f\x7f]+$"
TaskId = Annotated[
    str,
    Path(max_length=MAX_TASK_KEY, pattern=NO_CONTROL, description="A task key or task id."),
]
Filter = Annotated[str | None, Query(max_length=128, pattern=NO_CONTROL)]
AppId = Annotated[
    str | None,
    Query(pattern=APP_ID_PATTERN, description="The tenant (SdkAppId) the task id belongs to."),
]


async def _task_key(task_id: TaskId, request: Request, app_id: AppId = None) -> str:
    """The task key: as given when scoped (``app_id``, or ``<app>:<task>``); a bare
    TaskId resolves to the one task that has it (409 if several apps do, 404 if none)."""
    if app_id is not None or is_task_key(task_id):
        return task_key(app_id, task_id)
    live = await _live(services(request).history.find_task_keys(task_id))
    try:
        async with transaction(request) as session:
            recorded = await recorded_task_keys(session, task_id)
    except ServiceUnavailable:
        if not live:
            raise
        log.warning("admin API: database down, %r resolved from live tasks only", task_id)
        recorded = []
    return choose(task_id, sorted({*live, *recorded}))


TaskKey = Annotated[str, Depends(_task_key)]


async def _live(operation: Awaitable[T]) -> T:
    """A history store call; an unreachable store is a 503, not an internal error."""
    try:
        return await operation
    except STORE_ERRORS as exc:
        log.error("admin API: history store unavailable: %r", exc)
        raise ServiceUnavailable("the history store is unavailable") from exc


async def _flush_transcripts(request: Request, *, required: bool) -> None:
    """Write queued transcript rows and callback events now. ``required``: refuse to go
    on without it (an erasure: a row still queued would recreate the task)."""
    running = services(request)
    try:
        for writer in (running.transcripts, running.callbacks.writer):
            # A view waits briefly (the database may be down); an erasure waits longer.
            await writer.flush(timeout=10.0 if required else 2.0)
    except Exception as exc:
        if required:
            raise ServiceUnavailable("could not write the queued records; retry") from exc
        log.warning("admin API: flushing queued records failed, the view may lag: %r", exc)


@router.get("/tasks", summary="List tasks, newest first", response_model=Page[TaskOut])
async def list_tasks(
    request: Request,
    app_id: AppId = None,
    room_id: Filter = None,
    user_id: Filter = None,
    active: Annotated[bool | None, Query(description="Not ended yet.")] = None,
    started_after: Annotated[datetime | None, Query(description="ISO 8601, inclusive")] = None,
    started_before: Annotated[datetime | None, Query(description="ISO 8601, exclusive")] = None,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Page[TaskOut]:
    await _flush_transcripts(request, required=False)
    filters = TaskFilter(
        app_id=app_id,
        room_id=room_id,
        user_id=user_id,
        active=active,
        started_after=as_utc(started_after),
        started_before=as_utc(started_before),
    )
    async with transaction(request) as session:
        page = await TaskRepository(session).search(filters, offset=offset, limit=limit)
        items = [TaskOut.model_validate(task) for task in page.items]
    return Page[TaskOut](items=items, total=page.total, offset=offset, limit=limit)


@router.get(
    "/tasks/{task_id}",
    summary="A task: its record, live history, summary and durable transcript",
    response_model=TaskDetail,
)
async def get_task(task_id: TaskKey, request: Request) -> TaskDetail:
    history = await _live(services(request).history.load(task_id, MAX_MESSAGES_SHOWN))
    live = history.total_messages > 0 or bool(history.summary)
    await _flush_transcripts(request, required=False)
    task: TaskOut | None = None
    transcript: list[TranscriptMessageOut] | None = None
    try:
        async with transaction(request) as session:
            row = await TaskRepository(session).get(task_id)
            task = TaskOut.model_validate(row) if row is not None else None
            stored = await TranscriptRepository(session).for_task(task_id)
            transcript = [TranscriptMessageOut.model_validate(m) for m in stored]
    except ServiceUnavailable:
        if not live:
            raise
        # The live history is still worth showing; transcript None says what is missing.
    if not live and task is None and not transcript:
        raise NotFound(f"no task {task_id!r}")
    return TaskDetail(
        task_id=task_id,
        task=task,
        summary=history.summary,
        total_messages=history.total_messages,
        messages=[HistoryMessageOut.model_validate(m.to_dict()) for m in history.messages],
        transcript=transcript,
    )


@router.post(
    "/tasks/{task_id}/reset",
    summary="Forget the task's live history (the durable transcript stays)",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
)
async def reset_task(task_id: TaskKey, request: Request) -> None:
    await _live(services(request).history.reset(task_id))


@router.post(
    "/tasks/{task_id}/messages",
    summary="Add a context message to the live history (seen from the next turn on)",
    response_model=HistoryMessageOut,
    status_code=status.HTTP_201_CREATED,
)
async def add_context(
    task_id: TaskKey, body: ContextMessageIn, request: Request
) -> HistoryMessageOut:
    message = StoredMessage(role=body.role, content=body.content, source="context")
    await _live(services(request).history.append(task_id, [message]))
    writer = services(request).transcripts
    if writer is not None:  # the durable transcript records operator context too
        writer.submit(CallContext(task_id=task_id), [message])
    return HistoryMessageOut.model_validate(message.to_dict())


@router.post(
    "/tasks/{task_id}/metainfo",
    summary="Queue meta.info for the client app, sent with the task's next reply",
    status_code=status.HTTP_202_ACCEPTED,
)
async def queue_metainfo(task_id: TaskKey, body: MetaInfoIn, request: Request) -> dict[str, bool]:
    await _live(queue_for_task(services(request).history, task_id, body.metainfo))
    return {"queued": True}


@router.delete(
    "/tasks/{task_id}",
    summary="Erase a task: live history, record, transcript, events, metrics (idempotent)",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
)
async def delete_task(task_id: TaskKey, request: Request) -> None:
    # The tombstone makes it final: rows any replica (or its spool) accepted for the task
    # before now are discarded by the writer that would have written them.
    # The live store's tombstone does the same for the live history: a commit of a turn
    # that began before now, in flight or retried on any replica, is refused.
    at = time.time()
    async with transaction(request) as session:
        await erase_task(session, task_id, at=at)
    await _live(services(request).history.erase(task_id, at))


@router.get(
    "/tasks/{task_id}/events",
    summary="The engine callbacks (901-909) received for a task, oldest first",
    response_model=list[EventOut],
)
async def task_events(task_id: TaskKey, request: Request) -> list[EventOut]:
    async with transaction(request) as session:
        events = await EventRepository(session).for_task(task_id)
        return [EventOut.model_validate(event) for event in events]


@router.get(
    "/tasks/{task_id}/metrics",
    summary="The per-round metrics and errors the engine reported for a task",
    response_model=list[MetricOut],
)
async def task_metrics(task_id: TaskKey, request: Request) -> list[MetricOut]:
    async with transaction(request) as session:
        metrics = await EventRepository(session).metrics_for_task(task_id)
        return [MetricOut.model_validate(metric) for metric in metrics]
