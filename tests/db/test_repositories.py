"""The repositories on SQLite and PostgreSQL, on a schema built by the migrations."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from proxy.db.base import row_chunks
from proxy.db.models import ApiKey, CallbackEvent, RoundMetric, Task, TranscriptMessage
from proxy.db.repositories import (
    KEY_PREFIX,
    EventRepository,
    KeyRepository,
    ProfileRepository,
    RouteRepository,
    TaskFilter,
    TaskRepository,
    TranscriptRepository,
    hash_key,
)
from proxy.db.session import make_engine, make_sessionmaker

Sessions = async_sessionmaker[AsyncSession]
T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


def utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes (stored as UTC); PostgreSQL aware ones."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


@pytest.fixture
async def sessions(migrated_database_url: str) -> AsyncIterator[Sessions]:
    engine = make_engine(migrated_database_url)
    yield make_sessionmaker(engine)
    await engine.dispose()


# Keys.


async def test_key_create_returns_the_plain_key_once_and_stores_its_hash(
    sessions: Sessions,
) -> None:
    async with sessions() as session, session.begin():
        await ProfileRepository(session).create("support")
        key, plain = await KeyRepository(session).create(
            "ops", profile_name="support", app_id="app-1", rate_limit_per_minute=60
        )
    assert plain.startswith(KEY_PREFIX)
    assert key.key_hash == hashlib.sha256(plain.encode()).hexdigest() == hash_key(plain)
    assert key.key_prefix == plain[:10]

    async with sessions() as session:
        stored = await KeyRepository(session).get(key.id)
        assert stored is not None
        values = [getattr(stored, column.key) for column in ApiKey.__table__.columns]
    assert not any(isinstance(value, str) and plain in value for value in values)
    assert stored.key_hash == hash_key(plain)
    assert (stored.name, stored.profile_name, stored.app_id) == ("ops", "support", "app-1")
    assert stored.rate_limit_per_minute == 60
    assert stored.allow_profile_override is False
    assert stored.revoked_at is None

    async with sessions() as session, session.begin():
        _, other = await KeyRepository(session).create("ops")
    assert other != plain  # a new secret every time


async def test_active_keys_exclude_revoked_and_expired(sessions: Sessions) -> None:
    now = datetime.now(UTC)
    async with sessions() as session, session.begin():
        keys = KeyRepository(session)
        forever, _ = await keys.create("forever")
        later, _ = await keys.create("later", expires_at=now + timedelta(hours=1))
        expired, _ = await keys.create("expired", expires_at=now - timedelta(seconds=1))
        revoked, _ = await keys.create("revoked")
        await keys.revoke(revoked.id)

    async with sessions() as session:
        keys = KeyRepository(session)
        assert {key.id for key in await keys.active()} == {forever.id, later.id}
        assert {key.id for key in await keys.list_all()} == {
            forever.id,
            later.id,
            expired.id,
            revoked.id,
        }


async def test_revoke(sessions: Sessions) -> None:
    async with sessions() as session, session.begin():
        key, _ = await KeyRepository(session).create("k")

    async with sessions() as session, session.begin():
        revoked = await KeyRepository(session).revoke(key.id)
        assert revoked is not None and revoked.revoked_at is not None
        first = utc(revoked.revoked_at)

    async with sessions() as session, session.begin():
        keys = KeyRepository(session)
        again = await keys.revoke(key.id)  # idempotent: the first time stands
        assert again is not None and utc(again.revoked_at) == first
        assert await keys.revoke("no-such-key") is None
        assert await keys.active() == []

    async with sessions() as session, session.begin():
        keys = KeyRepository(session)
        assert await keys.delete(key.id) is True
        assert await keys.delete(key.id) is False
        assert await keys.get(key.id) is None


# Profiles.


async def test_profiles_crud(sessions: Sessions) -> None:
    async with sessions() as session, session.begin():
        profiles = ProfileRepository(session)
        await profiles.create(
            "sales",
            system_prompt="Sell.",
            history={"max_turns": 10, "summarise": True},
            knowledge_bases=["kb-1", "kb-2"],
            filler_phrases=["嗯，", "Let me see."],
        )
        await profiles.create("agent")

    async with sessions() as session:
        profiles = ProfileRepository(session)
        assert [p.name for p in await profiles.list_all()] == ["agent", "sales"]
        sales = await profiles.get("sales")
        assert sales is not None
        assert sales.system_prompt == "Sell."
        assert sales.system_prompt_mode == "prefix"  # the default
        assert sales.history == {"max_turns": 10, "summarise": True}
        assert sales.knowledge_bases == ["kb-1", "kb-2"]
        assert sales.filler_phrases == ["嗯，", "Let me see."]
        assert sales.tools == []
        created, updated = utc(sales.created_at), utc(sales.updated_at)
        assert await profiles.get("nobody") is None

    async with sessions() as session, session.begin():
        profiles = ProfileRepository(session)
        changed = await profiles.update(
            "sales", system_prompt_mode="override", tools=["lookup"], model="gpt-x"
        )
        assert changed is not None
        assert await profiles.update("nobody", model="x") is None

    async with sessions() as session:
        sales = await ProfileRepository(session).get("sales")
        assert sales is not None
        assert (sales.system_prompt_mode, sales.tools, sales.model) == (
            "override",
            ["lookup"],
            "gpt-x",
        )
        assert sales.system_prompt == "Sell."  # untouched fields stay
        assert utc(sales.created_at) == created
        assert utc(sales.updated_at) > updated  # type: ignore[operator]

    async with sessions() as session, session.begin():
        profiles = ProfileRepository(session)
        assert await profiles.delete("sales") is True
        assert await profiles.delete("sales") is False
        assert [p.name for p in await profiles.list_all()] == ["agent"]


async def test_deleting_a_profile_unbinds_its_keys(sessions: Sessions) -> None:
    """The same on both databases (SQLite does not enforce the FK's ON DELETE SET NULL)."""
    async with sessions() as session, session.begin():
        await ProfileRepository(session).create("gone")
        key, _ = await KeyRepository(session).create("k", profile_name="gone")
    async with sessions() as session, session.begin():
        assert await ProfileRepository(session).delete("gone") is True
    async with sessions() as session:
        stored = await KeyRepository(session).get(key.id)
        assert stored is not None and stored.profile_name is None


# Routes.


async def test_routes_put_replace_delete(sessions: Sessions) -> None:
    first = [{"base_url": "http://a", "model": "m1"}]
    second = [{"base_url": "http://b", "api_key_env": "B_KEY"}, {"base_url": "http://c"}]
    async with sessions() as session, session.begin():
        routes = RouteRepository(session)
        created = await routes.put("fast", first)
        await routes.put("alpha", [{"base_url": "http://z"}])
        assert created.targets == first

    async with sessions() as session, session.begin():
        routes = RouteRepository(session)
        before = await routes.get("fast")
        assert before is not None and before.targets == first
        updated_before = utc(before.updated_at)
        await routes.put("fast", second)

    async with sessions() as session, session.begin():
        routes = RouteRepository(session)
        assert [r.alias for r in await routes.list_all()] == ["alpha", "fast"]
        fast = await routes.get("fast")
        assert fast is not None and fast.targets == second
        assert utc(fast.updated_at) > updated_before  # type: ignore[operator]
        assert await routes.delete("fast") is True
        assert await routes.delete("fast") is False
        assert await routes.get("fast") is None
        assert [r.alias for r in await routes.list_all()] == ["alpha"]


# Tasks.


async def test_task_touch_inserts_then_updates(sessions: Sessions) -> None:
    async with sessions() as session, session.begin():
        await TaskRepository(session).touch(
            "t1", app_id="app", room_id="room", user_id="u", profile_name="sales"
        )
    async with sessions() as session:
        task = await TaskRepository(session).get("t1")
        assert task is not None
        assert (task.app_id, task.room_id, task.user_id, task.profile_name) == (
            "app",
            "room",
            "u",
            "sales",
        )
        assert task.status == "active"
        assert task.ended_at is None
        started, first_activity = utc(task.started_at), utc(task.last_activity_at)

    ended = datetime.now(UTC)
    async with sessions() as session, session.begin():
        await TaskRepository(session).touch(
            "t1", status="ended", ended_at=ended, end_reason="hangup"
        )
    async with sessions() as session:
        task = await TaskRepository(session).get("t1")
        assert task is not None
        assert (task.status, task.end_reason) == ("ended", "hangup")
        assert utc(task.ended_at) == ended
        assert (task.app_id, task.room_id, task.profile_name) == ("app", "room", "sales")
        assert utc(task.started_at) == started  # only the given fields change
        assert utc(task.last_activity_at) > first_activity  # type: ignore[operator]
        assert await session.scalar(select(func.count()).select_from(Task)) == 1


def test_rows_are_cut_into_chunks_of_few_sizes() -> None:
    """Each chunk size is one prepared statement the drivers cache: few sizes, few entries."""
    sizes = {len(chunk) for n in range(1, 600) for chunk in row_chunks(list(range(n)))}
    assert sizes == {256, 128, 64, 32, 16, 8, 4, 2, 1}
    chunks = list(row_chunks(list(range(600))))
    assert [len(c) for c in chunks] == [256, 256, 64, 16, 8]
    assert [x for c in chunks for x in c] == list(range(600))
    assert list(row_chunks([])) == []


async def test_task_touch_many_changes_only_the_fields_given_per_task(
    sessions: Sessions,
) -> None:
    async with sessions() as session, session.begin():
        await TaskRepository(session).touch_many(
            {"t1": {"room_id": "r1", "status": "ended", "end_reason": "hangup"}, "t2": {}}
        )
    batch = {  # three sets of fields: three statements, whatever the number of tasks
        "t1": {"room_id": "r1b"},  # status and reason stay
        "t2": {"status": "ready", "app_id": "app"},
        "t3": {"status": "ready", "app_id": "app"},
        **{f"n{i}": {"room_id": f"room{i}"} for i in range(600)},  # more than one statement
    }
    async with sessions() as session, session.begin():
        await TaskRepository(session).touch_many(batch)
    async with sessions() as session:
        rows = {t.task_id: t for t in (await session.scalars(select(Task))).all()}
    assert len(rows) == 603
    assert (rows["t1"].room_id, rows["t1"].status, rows["t1"].end_reason) == (
        "r1b",
        "ended",
        "hangup",
    )
    assert [(rows[t].status, rows[t].app_id) for t in ("t2", "t3")] == [("ready", "app")] * 2
    assert rows["n599"].room_id == "room599" and rows["n599"].status == "active"


async def seed_tasks(sessions: Sessions) -> None:
    """t0..t5, one hour apart (t5 newest); odd ones ended; two apps, rooms, users."""
    async with sessions() as session, session.begin():
        tasks = TaskRepository(session)
        for i in range(6):
            await tasks.touch(
                f"t{i}",
                app_id="a" if i < 4 else "b",
                room_id=f"room{i % 2}",
                user_id=f"user{i % 3}",
                started_at=T0 + timedelta(hours=i),
                ended_at=T0 + timedelta(hours=i, minutes=5) if i % 2 else None,
            )


async def search(sessions: Sessions, **filters: Any) -> list[str]:
    async with sessions() as session:
        page = await TaskRepository(session).search(TaskFilter(**filters))
    assert page.total == len(page.items)
    return [task.task_id for task in page.items]


async def test_task_search_filters(sessions: Sessions) -> None:
    await seed_tasks(sessions)
    assert await search(sessions) == ["t5", "t4", "t3", "t2", "t1", "t0"]  # newest first
    assert await search(sessions, app_id="b") == ["t5", "t4"]
    assert await search(sessions, room_id="room0") == ["t4", "t2", "t0"]
    assert await search(sessions, user_id="user1") == ["t4", "t1"]
    assert await search(sessions, active=True) == ["t4", "t2", "t0"]
    assert await search(sessions, active=False) == ["t5", "t3", "t1"]
    assert await search(sessions, started_after=T0 + timedelta(hours=4)) == ["t5", "t4"]
    assert await search(sessions, started_before=T0 + timedelta(hours=2)) == ["t1", "t0"]
    assert await search(
        sessions,
        app_id="a",
        active=True,
        started_after=T0 + timedelta(hours=1),
        started_before=T0 + timedelta(hours=3),
    ) == ["t2"]
    assert await search(sessions, app_id="nobody") == []


async def test_task_search_paging_and_total(sessions: Sessions) -> None:
    await seed_tasks(sessions)
    pages = []
    async with sessions() as session:
        tasks = TaskRepository(session)
        for offset in (0, 2, 4, 6):
            page = await tasks.search(TaskFilter(), offset=offset, limit=2)
            assert page.total == 6
            pages.append([task.task_id for task in page.items])
        filtered = await tasks.search(TaskFilter(app_id="a"), offset=1, limit=2)
    assert pages == [["t5", "t4"], ["t3", "t2"], ["t1", "t0"], []]
    assert filtered.total == 4
    assert [task.task_id for task in filtered.items] == ["t2", "t1"]


async def test_task_delete_removes_everything_about_it(sessions: Sessions) -> None:
    for task_id in ("doomed", "kept"):
        async with sessions() as session, session.begin():
            await TaskRepository(session).touch(task_id)
            await TranscriptRepository(session).upsert(
                [message(f"{task_id}-m1", task_id), message(f"{task_id}-m2", task_id)]
            )
            events = EventRepository(session)
            await events.record(task_id=task_id, event_type=901, event_ms_ts=1, payload={})
            await events.add_metric(task_id=task_id, metric="ttft_ms", value=120.0)

    async with sessions() as session, session.begin():
        tasks = TaskRepository(session)
        assert await tasks.delete("doomed") is True
        assert await tasks.delete("doomed") is False

    async with sessions() as session:
        for model in (TranscriptMessage, CallbackEvent, RoundMetric):
            rows = (await session.scalars(select(model.task_id))).all()
            assert set(rows) == {"kept"}, model.__name__
        assert await TaskRepository(session).get("doomed") is None
        assert await TaskRepository(session).get("kept") is not None


# Transcripts.


def message(message_id: str, task_id: str = "t1", **fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": message_id,
        "task_id": task_id,
        "role": "user",
        "content": f"text of {message_id}",
        "name": None,
        "tool_calls": None,
        "tool_call_id": None,
        "request_id": None,
        "round_id": None,
        "interrupted": False,
        "source": "turn",
    }
    row.update(fields)
    return row


async def test_transcript_upsert_inserts_then_updates_in_place(sessions: Sessions) -> None:
    async with sessions() as session, session.begin():
        await TaskRepository(session).touch("t1")
        transcript = TranscriptRepository(session)
        await transcript.upsert(
            [
                message("m2", created_at=T0 + timedelta(seconds=2), role="assistant"),
                message("m1", created_at=T0 + timedelta(seconds=1)),
                message(
                    "m3",
                    created_at=T0 + timedelta(seconds=3),
                    role="assistant",
                    content=None,
                    tool_calls=[{"id": "c1", "function": {"name": "f", "arguments": "{}"}}],
                ),
            ]
        )
        await transcript.upsert([])  # nothing to do

    async with sessions() as session:
        rows = await TranscriptRepository(session).for_task("t1")
        assert [row.id for row in rows] == ["m1", "m2", "m3"]  # by created_at
        assert rows[2].content is None
        assert rows[2].tool_calls == [{"id": "c1", "function": {"name": "f", "arguments": "{}"}}]

    # A correction (905) and an interruption rewrite existing rows, keeping id and time.
    async with sessions() as session, session.begin():
        await TranscriptRepository(session).upsert(
            [
                message("m1", created_at=T0 + timedelta(minutes=9), content="corrected"),
                message(
                    "m2",
                    created_at=T0 + timedelta(minutes=9),
                    role="assistant",
                    content=[{"type": "text", "text": "half"}],
                    interrupted=True,
                    round_id="r2",
                ),
            ]
        )

    async with sessions() as session:
        rows = await TranscriptRepository(session).for_task("t1")
        assert [row.id for row in rows] == ["m1", "m2", "m3"]
        assert rows[0].content == "corrected"
        assert rows[1].content == [{"type": "text", "text": "half"}]
        assert (rows[1].interrupted, rows[1].round_id) == (True, "r2")
        assert utc(rows[0].created_at) == T0 + timedelta(seconds=1)  # not moved
        total = await session.scalar(select(func.count()).select_from(TranscriptMessage))
        assert total == 3


async def test_transcript_without_explicit_times_keeps_insertion_order(
    sessions: Sessions,
) -> None:
    async with sessions() as session, session.begin():
        await TaskRepository(session).touch("t1")
    for message_id in ("a3", "a1", "a2"):  # separate batches: created_at increases
        async with sessions() as session, session.begin():
            await TranscriptRepository(session).upsert([message(message_id)])
    async with sessions() as session:
        rows = await TranscriptRepository(session).for_task("t1")
    assert [row.id for row in rows] == ["a3", "a1", "a2"]
    assert all(row.source == "turn" and row.interrupted is False for row in rows)


# Callback events and metrics.


async def test_event_record_is_idempotent(sessions: Sessions) -> None:
    event = {"task_id": "t1", "event_type": 905, "event_ms_ts": 1_700_000_000_123}
    async with sessions() as session, session.begin():
        events = EventRepository(session)
        assert await events.record(**event, round_id="r1", payload={"text": "hi"}) is True
        # A retry of the same callback (even with a different body) is not stored again.
        assert await events.record(**event, payload={"text": "retry"}) is False
    async with sessions() as session, session.begin():
        events = EventRepository(session)
        assert await events.record(**event, payload={}) is False
        # Another type or time at the same task is a different event.
        assert await events.record(**{**event, "event_type": 906}, payload={}) is True
        assert await events.record(**{**event, "event_ms_ts": 1}, payload={}) is True
        assert await events.record(**{**event, "task_id": "t2"}, payload={}) is True

    async with sessions() as session:
        stored = await EventRepository(session).for_task("t1")
    assert [(e.event_ms_ts, e.event_type) for e in stored] == [
        (1, 905),
        (1_700_000_000_123, 905),
        (1_700_000_000_123, 906),
    ]
    first = stored[1]
    assert (first.round_id, first.payload) == ("r1", {"text": "hi"})
    assert first.received_at is not None
    assert isinstance(first.id, int)


async def test_metrics(sessions: Sessions) -> None:
    async with sessions() as session, session.begin():
        events = EventRepository(session)
        await events.add_metric(task_id="t1", round_id="r1", metric="ttft_ms", value=210.5)
        await events.add_metric(
            task_id="t1", round_id="r1", metric="error", value=None, tags={"code": 1002}
        )
        await events.add_metric(task_id="t2", metric="ttft_ms", value=99.0)

    async with sessions() as session:
        metrics = await EventRepository(session).metrics_for_task("t1")
    assert [(m.metric, m.value, m.tags, m.round_id) for m in metrics] == [
        ("ttft_ms", 210.5, {}, "r1"),
        ("error", None, {"code": 1002}, "r1"),
    ]
    assert metrics[0].id < metrics[1].id
