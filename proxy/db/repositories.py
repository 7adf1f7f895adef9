"""Data access: one small repository per entity, each taking an ``AsyncSession``.

Callers own the transaction (``async with sessionmaker() as s, s.begin(): ...``).
"""

from __future__ import annotations

import functools
import hashlib
import secrets
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, delete, func, select, update
from sqlalchemy import insert as core_insert
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from proxy.db.base import Base, row_chunks, table_of, utcnow
from proxy.db.models import (
    ApiKey,
    CallbackEvent,
    Profile,
    RoundMetric,
    Route,
    Task,
    TranscriptMessage,
    TurnRecord,
)

KEY_PREFIX = "vp-"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def _dialect(session: AsyncSession) -> str:
    return session.bind.dialect.name if session.bind is not None else "sqlite"


def _insert(session: AsyncSession, model: Any) -> Any:
    """INSERT that supports ON CONFLICT on both PostgreSQL and SQLite."""
    return _dialect_insert(_dialect(session), model)


def _dialect_insert(dialect: str, model: Any) -> Any:
    return (pg_insert if dialect == "postgresql" else sqlite_insert)(model)


def _upsert(session: AsyncSession, model: type[Base], key: str, updated: Iterable[str]) -> Any:
    """INSERT ... ON CONFLICT (``key``) DO UPDATE ``updated``, of the model's table, for
    rows given at execution (an executemany): compiled once, whatever the number of rows.
    A multi-row VALUES of ORM rows was compiled at every write-behind batch, about 0.3 ms
    of CPU per row (SQLite, 54-row batches: 15-21 ms a batch; this way 3.5-4.4 ms)."""
    return _upsert_statement(_dialect(session), model, key, tuple(updated))


@functools.lru_cache(maxsize=64)  # a few models and sets of fields per dialect
def _upsert_statement(dialect: str, model: type[Base], key: str, updated: tuple[str, ...]) -> Any:
    # The same statement object each time: SQLAlchemy keeps its cache key on it.
    insert = _dialect_insert(dialect, table_of(model))
    return insert.on_conflict_do_update(
        index_elements=[key], set_={k: insert.excluded[k] for k in updated}
    )


@dataclass(slots=True)
class Page:
    items: Sequence[Any]
    total: int


class KeyRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def create(self, name: str, **fields: Any) -> tuple[ApiKey, str]:
        """A new key; the plain key is returned here and never again."""
        plain = new_key()
        key = ApiKey(
            id=uuid.uuid4().hex,
            name=name,
            key_hash=hash_key(plain),
            key_prefix=plain[:10],
            **fields,
        )
        self.session.add(key)
        await self.session.flush()
        return key, plain

    async def get(self, key_id: str) -> ApiKey | None:
        return await self.session.get(ApiKey, key_id)

    async def list_all(self) -> Sequence[ApiKey]:
        return (await self.session.scalars(select(ApiKey).order_by(ApiKey.created_at))).all()

    async def active(self) -> Sequence[ApiKey]:
        """Keys that may authenticate now (the auth cache loads these)."""
        now = utcnow()
        query = select(ApiKey).where(
            ApiKey.revoked_at.is_(None),
            (ApiKey.expires_at.is_(None)) | (ApiKey.expires_at > now),
        )
        return (await self.session.scalars(query)).all()

    async def revoke(self, key_id: str) -> ApiKey | None:
        key = await self.get(key_id)
        if key is not None and key.revoked_at is None:
            key.revoked_at = utcnow()
        return key

    async def delete(self, key_id: str) -> bool:
        result = await self.session.execute(delete(ApiKey).where(ApiKey.id == key_id))
        return bool(result.rowcount)  # type: ignore[attr-defined]


class ProfileRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, name: str) -> Profile | None:
        return await self.session.get(Profile, name)

    async def list_all(self) -> Sequence[Profile]:
        return (await self.session.scalars(select(Profile).order_by(Profile.name))).all()

    async def create(self, name: str, **fields: Any) -> Profile:
        profile = Profile(name=name, **fields)
        self.session.add(profile)
        await self.session.flush()
        return profile

    async def update(self, name: str, **fields: Any) -> Profile | None:
        profile = await self.get(name)
        if profile is not None:
            for field, value in fields.items():
                setattr(profile, field, value)
            await self.session.flush()
        return profile

    async def delete(self, name: str) -> bool:
        # Unbind its keys explicitly: SQLite does not enforce the FK's ON DELETE SET NULL.
        await self.session.execute(
            update(ApiKey).where(ApiKey.profile_name == name).values(profile_name=None)
        )
        result = await self.session.execute(delete(Profile).where(Profile.name == name))
        return bool(result.rowcount)  # type: ignore[attr-defined]


class RouteRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, alias: str) -> Route | None:
        return await self.session.get(Route, alias)

    async def list_all(self) -> Sequence[Route]:
        return (await self.session.scalars(select(Route).order_by(Route.alias))).all()

    async def put(self, alias: str, targets: list[dict[str, Any]]) -> Route:
        route = await self.get(alias)
        if route is None:
            route = Route(alias=alias, targets=targets)
            self.session.add(route)
        else:
            route.targets = targets
        await self.session.flush()
        return route

    async def delete(self, alias: str) -> bool:
        result = await self.session.execute(delete(Route).where(Route.alias == alias))
        return bool(result.rowcount)  # type: ignore[attr-defined]


@dataclass(slots=True)
class TaskFilter:
    app_id: str | None = None
    room_id: str | None = None
    user_id: str | None = None
    active: bool | None = None
    started_after: datetime | None = None
    started_before: datetime | None = None


class TaskRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, task_id: str) -> Task | None:
        return await self.session.get(Task, task_id)

    async def touch(self, task_id: str, **fields: Any) -> None:
        """Create the task if new; update the given fields and the activity time."""
        values = {"task_id": task_id, "last_activity_at": utcnow(), **fields}
        insert = _insert(self.session, Task).values(**values)
        updates = {k: insert.excluded[k] for k in values if k != "task_id"}
        await self.session.execute(
            insert.on_conflict_do_update(index_elements=["task_id"], set_=updates)
        )

    async def touch_many(self, tasks: dict[str, dict[str, Any]]) -> None:
        """``touch`` for many tasks: one statement per set of fields given, not per task
        (a write-behind batch then holds its transaction, and SQLite's one write lock,
        for a few round trips rather than one per task). Rows go in task id order within
        each statement (PostgreSQL may still, rarely, see a deadlock between two writers
        touching the same tasks: it aborts one, and the write-behind queue retries it).
        """
        now = utcnow()
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for task_id in sorted(tasks):
            values = {"task_id": task_id, "last_activity_at": now, **tasks[task_id]}
            groups.setdefault(tuple(sorted(values)), []).append(values)
        for columns, rows in groups.items():
            updated = [k for k in columns if k != "task_id"]
            await self.session.execute(_upsert(self.session, Task, "task_id", updated), rows)

    async def search(self, filters: TaskFilter, *, offset: int = 0, limit: int = 50) -> Page:
        query: Select[Any] = select(Task)
        if filters.app_id is not None:
            query = query.where(Task.app_id == filters.app_id)
        if filters.room_id is not None:
            query = query.where(Task.room_id == filters.room_id)
        if filters.user_id is not None:
            query = query.where(Task.user_id == filters.user_id)
        if filters.active is True:
            query = query.where(Task.ended_at.is_(None))
        elif filters.active is False:
            query = query.where(Task.ended_at.is_not(None))
        if filters.started_after is not None:
            query = query.where(Task.started_at >= filters.started_after)
        if filters.started_before is not None:
            query = query.where(Task.started_at < filters.started_before)
        total = await self.session.scalar(select(func.count()).select_from(query.subquery()))
        rows = await self.session.scalars(
            query.order_by(Task.started_at.desc(), Task.task_id).offset(offset).limit(limit)
        )
        return Page(items=rows.all(), total=int(total or 0))

    async def delete(self, task_id: str) -> bool:
        """The task and everything recorded about it (privacy requests)."""
        for model in (TranscriptMessage, CallbackEvent, RoundMetric, TurnRecord):
            await self.session.execute(delete(model).where(model.task_id == task_id))
        result = await self.session.execute(delete(Task).where(Task.task_id == task_id))
        return bool(result.rowcount)  # type: ignore[attr-defined]


class TranscriptRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def upsert(self, rows: list[dict[str, Any]]) -> None:
        """Insert messages, or update them in place (a 905 correction keeps the id)."""
        if rows:
            mutable = ("content", "interrupted", "tool_calls", "round_id")
            await self.session.execute(
                _upsert(self.session, TranscriptMessage, "id", mutable), rows
            )

    async def update(self, task_id: str, message_id: str, **fields: Any) -> bool:
        """Change fields of one stored message in place; False when it is not stored."""
        result = await self.session.execute(
            update(TranscriptMessage)
            .where(TranscriptMessage.task_id == task_id, TranscriptMessage.id == message_id)
            .values(**fields)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def for_task(self, task_id: str) -> Sequence[TranscriptMessage]:
        query = (
            select(TranscriptMessage)
            .where(TranscriptMessage.task_id == task_id)
            .order_by(TranscriptMessage.created_at, TranscriptMessage.id)
        )
        return (await self.session.scalars(query)).all()


class EventRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def record(self, **fields: Any) -> bool:
        """Store a callback event; False when it was stored before (a retry)."""
        insert = _insert(self.session, CallbackEvent).values(**fields)
        result = await self.session.execute(
            insert.on_conflict_do_nothing(index_elements=["task_id", "event_type", "event_ms_ts"])
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def record_many(self, rows: list[dict[str, Any]]) -> set[tuple[str, int, int]]:
        """Store callback events, a few statements for all; the keys (task id, event type,
        event time) of those that were new. One stored before (a retry) is skipped.
        """
        new: set[tuple[str, int, int]] = set()
        for chunk in row_chunks(rows):
            statement = (
                _insert(self.session, CallbackEvent)
                .values(list(chunk))
                .on_conflict_do_nothing(index_elements=["task_id", "event_type", "event_ms_ts"])
                .returning(
                    CallbackEvent.task_id, CallbackEvent.event_type, CallbackEvent.event_ms_ts
                )
            )
            result = await self.session.execute(statement)
            new.update((row[0], row[1], row[2]) for row in result)
        return new

    async def add_metrics(self, rows: list[dict[str, Any]]) -> None:
        """Many metric rows: one statement, executed for each (no ids read back)."""
        if rows:
            await self.session.execute(core_insert(RoundMetric), rows)

    async def for_task(self, task_id: str) -> Sequence[CallbackEvent]:
        query = (
            select(CallbackEvent)
            .where(CallbackEvent.task_id == task_id)
            .order_by(CallbackEvent.event_ms_ts, CallbackEvent.id)
        )
        return (await self.session.scalars(query)).all()

    async def add_metric(self, **fields: Any) -> None:
        self.session.add(RoundMetric(**fields))

    async def metrics_for_task(self, task_id: str) -> Sequence[RoundMetric]:
        query = (
            select(RoundMetric)
            .where(RoundMetric.task_id == task_id)
            .order_by(RoundMetric.created_at, RoundMetric.id)
        )
        return (await self.session.scalars(query)).all()
