"""TranscriptWriter: write-behind transcript persistence (SQLite, PostgreSQL, an outage)."""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from proxy.call import CallContext
from proxy.context.history import StoredMessage
from proxy.db.base import Base
from proxy.db.models import Task, TranscriptMessage
from proxy.db.repositories import TranscriptRepository
from proxy.db.session import make_engine, make_sessionmaker
from proxy.db.transcript import TranscriptWriter
from tests.pg_cluster import ThrowawayPostgres

DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
Sessions = async_sessionmaker[AsyncSession]


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    """A fresh database on the test server, dropped afterwards."""
    server = os.environ.get("PROXY_TEST_DATABASE_URL")
    admin_url = make_url(server or DEFAULT_PG_URL).set(drivername="postgresql")
    admin_dsn = admin_url.render_as_string(hide_password=False)
    try:
        admin = await asyncpg.connect(admin_dsn, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        if server:
            raise
        pytest.skip(f"no PostgreSQL at {DEFAULT_PG_URL} ({type(exc).__name__})")
    name = f"proxytest_w_{uuid.uuid4().hex}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path}/t.db"
    return str(request.getfixturevalue("postgres_url"))


async def connect(url: str) -> tuple[Any, Sessions]:
    engine = make_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    return engine, make_sessionmaker(engine)


@pytest.fixture
async def sessions(db_url: str) -> AsyncIterator[Sessions]:
    engine, maker = await connect(db_url)
    yield maker
    await engine.dispose()


@pytest.fixture
async def writer(sessions: Sessions) -> AsyncIterator[TranscriptWriter]:
    w = TranscriptWriter(sessions, flush_seconds=0.05, retry_max_seconds=0.3)
    await w.start()
    yield w
    await w.close(timeout=5)


@pytest.fixture
def throwaway_pg() -> Iterator[ThrowawayPostgres]:
    try:
        cluster = ThrowawayPostgres()
    except FileNotFoundError as exc:
        pytest.skip(f"outage test needs a local PostgreSQL server install: {exc}")
    try:
        yield cluster.start()
    finally:
        cluster.remove()


_clock = time.time()


def msg(role: str, content: Any, **fields: Any) -> StoredMessage:
    global _clock
    _clock += 0.001  # distinct, increasing timestamps: for_task orders by created_at
    return StoredMessage(role=role, content=content, created_at=_clock, **fields)


def call(task_id: str, **fields: Any) -> CallContext:
    return CallContext(task_id=task_id, **fields)


async def stored(sessions: Sessions, task_id: str) -> list[TranscriptMessage]:
    async with sessions() as session:
        return list(await TranscriptRepository(session).for_task(task_id))


async def task_row(sessions: Sessions, task_id: str) -> Task | None:
    async with sessions() as session:
        return await session.get(Task, task_id)


def timed_submit(writer: TranscriptWriter, *args: Any, **kwargs: Any) -> bool:
    started = time.perf_counter()
    queued = writer.submit(*args, **kwargs)
    assert time.perf_counter() - started < 0.05, "submit must not wait for the database"
    return queued


async def test_messages_arrive_in_order_with_the_task_row(
    writer: TranscriptWriter, sessions: Sessions
) -> None:
    task = f"task-{uuid.uuid4().hex[:8]}"
    ctx = call(task, app_id="app-1", room_id="room-1", user_id="user-1")
    turn1 = [msg("system", "be brief"), msg("user", "hello")]
    reply = msg("assistant", "hi v1", request_id="req-1")
    assert timed_submit(writer, ctx, turn1, profile="support")
    assert timed_submit(writer, ctx, [reply])
    # The same message id again in the same batch (a regenerated reply): the later wins.
    again = StoredMessage(
        role="assistant", content="hi v2", id=reply.id, created_at=reply.created_at
    )
    tool = msg("assistant", None, tool_calls=[{"id": "c1", "type": "function"}], name="bot")
    assert timed_submit(
        writer, ctx, [again, tool, msg("tool", [{"type": "text"}], tool_call_id="c1")]
    )
    assert timed_submit(writer, call("other-" + task), [msg("user", "elsewhere")])
    assert writer.pending == 4  # submit never writes by itself

    await writer.flush()
    assert writer.pending == 0 and writer.written == 4 and writer.failed_writes == 0
    rows = await stored(sessions, task)
    assert [r.content for r in rows] == ["be brief", "hello", "hi v2", None, [{"type": "text"}]]
    assert [r.id for r in rows[:3]] == [turn1[0].id, turn1[1].id, reply.id]
    assert rows[3].tool_calls == [{"id": "c1", "type": "function"}] and rows[3].name == "bot"
    assert rows[4].tool_call_id == "c1" and rows[4].role == "tool"
    assert rows[1].created_at.replace(tzinfo=UTC) == datetime.fromtimestamp(
        turn1[1].created_at, UTC
    )
    row = await task_row(sessions, task)
    assert row is not None
    assert (row.app_id, row.room_id, row.user_id, row.profile_name) == (
        "app-1",
        "room-1",
        "user-1",
        "support",
    )
    # A later submission without a profile keeps the one already stored.
    assert writer.submit(ctx, [msg("user", "more")])
    await writer.flush()
    row = await task_row(sessions, task)
    assert row is not None and row.profile_name == "support"
    assert len(await stored(sessions, "other-" + task)) == 1


async def test_batches_are_one_transaction_each(sessions: Sessions) -> None:
    transactions = 0

    def counting() -> AsyncSession:
        nonlocal transactions
        transactions += 1
        return sessions()

    writer = TranscriptWriter(counting, batch_size=4, flush_seconds=0.05)  # type: ignore[arg-type]
    task = f"task-{uuid.uuid4().hex[:8]}"
    sent = [msg("user", f"m{i}") for i in range(10)]
    for message in sent:
        writer.submit(call(task), [message])
    await writer.start()
    await writer.flush()
    await writer.close()
    assert transactions == 3 and writer.written == 10  # 4 + 4 + 2
    assert [r.id for r in await stored(sessions, task)] == [m.id for m in sent]


async def test_large_submission_and_repeated_ids(
    writer: TranscriptWriter, sessions: Sessions
) -> None:
    task = f"task-{uuid.uuid4().hex[:8]}"
    first = msg("assistant", "v1")
    again = StoredMessage(role="assistant", content="v2", id=first.id, created_at=first.created_at)
    many = [msg("user", f"n{i}") for i in range(1200)]  # more than one statement's worth
    assert writer.submit(call(task), [first, again, *many])
    await writer.flush()
    rows = await stored(sessions, task)
    assert len(rows) == 1201 and rows[0].content == "v2"
    assert [r.id for r in rows[1:]] == [m.id for m in many]
    assert writer.failed_writes == 0


async def test_bounded_buffer_drops_and_counts(sessions: Sessions, caplog) -> None:
    writer = TranscriptWriter(sessions, queue_size=2)  # never started
    caplog.set_level(logging.WARNING, logger="proxy.db.transcript")
    ctx = call("task-full")
    assert writer.submit(ctx, [msg("user", "1")])
    assert writer.submit_update("task-full", "x", "1'", False)
    for _ in range(5):
        assert writer.submit(ctx, [msg("user", "overflow")]) is False
    assert writer.submit_update("task-full", "x", "2'", True) is False
    assert (writer.dropped, writer.pending) == (6, 2)
    warnings = [r for r in caplog.records if "not recorded (full)" in r.getMessage()]
    # Every refusal is logged with its task (up to a burst limit per interval).
    assert [getattr(r, "task_id", None) for r in warnings] == ["task-full"] * 6
    assert writer.refused == {"full": 6}
    assert writer.submit(CallContext(), [msg("user", "stateless")]) is False  # no task id
    await writer.close(timeout=0.1)
    assert "2 submission(s) not written" in caplog.text
    assert writer.submit(ctx, [msg("user", "late")]) is False  # closed


async def test_updates_change_content_in_place(
    writer: TranscriptWriter, sessions: Sessions
) -> None:
    task = f"task-{uuid.uuid4().hex[:8]}"
    other = msg("user", "untouched")
    said = msg("assistant", "the full planned answer")
    writer.submit(call(task), [other, said])
    assert writer.submit_update(task, said.id, "the full", True)  # queued behind the insert
    await writer.flush()
    rows = await stored(sessions, task)
    assert [(r.content, r.interrupted) for r in rows] == [
        ("untouched", False),
        ("the full", True),
    ]
    writer.submit_update(task, said.id, "the full planned", False)  # after it was written
    writer.submit_update("another-task", said.id, "wrong task", True)  # matches nothing
    await writer.flush()
    rows = await stored(sessions, task)
    assert [(r.content, r.interrupted) for r in rows][1] == ("the full planned", False)
    assert writer.failed_writes == 0


async def test_close_flushes_what_is_queued(sessions: Sessions) -> None:
    writer = TranscriptWriter(sessions, flush_seconds=60)  # would sit on the batch for a minute
    await writer.start()
    task = f"task-{uuid.uuid4().hex[:8]}"
    sent = [msg("user", f"m{i}") for i in range(5)]
    for message in sent:
        writer.submit(call(task), [message])
    await asyncio.sleep(0.05)
    assert writer.pending == 5
    await writer.close(timeout=5)
    assert writer.pending == 0 and writer.written == 5
    assert [r.id for r in await stored(sessions, task)] == [m.id for m in sent]
    assert writer.submit(call(task), [msg("user", "after close")]) is False


async def test_rejected_submission_is_isolated_and_discarded(
    writer: TranscriptWriter, sessions: Sessions, db_url: str
) -> None:
    """Invalid data never blocks the queue: the batch is retried one submission at a time."""
    task = f"task-{uuid.uuid4().hex[:8]}"
    good1 = msg("user", "before")
    bad = msg(None, "no role")  # type: ignore[arg-type]  # NOT NULL violation
    # PostgreSQL's jsonb cannot hold U+0000: it is dropped, and the message is kept.
    with_nul = msg("user", "nul \x00 byte")
    good2 = msg("user", "after")
    for message in (good1, bad, with_nul, good2):
        writer.submit(call(task), [message])
    await writer.flush()
    rows = await stored(sessions, task)
    assert [r.id for r in rows] == [good1.id, with_nul.id, good2.id]
    assert rows[1].content == "nul  byte"
    assert writer.rejected == 1 and writer.written == 3
    assert writer.failed_writes == 2  # the batch, then the bad one alone


async def test_database_outage_loses_nothing(throwaway_pg: ThrowawayPostgres, caplog) -> None:
    caplog.set_level(logging.ERROR, logger="proxy.db.transcript")
    engine, sessions = await connect(throwaway_pg.url)
    writer = TranscriptWriter(sessions, flush_seconds=0.05, retry_max_seconds=0.3)
    await writer.start()
    try:
        task = "task-outage"
        before = [msg("user", "q1"), msg("assistant", "a1")]
        assert timed_submit(writer, call(task, app_id="app"), before)
        await writer.flush()
        assert [r.id for r in await stored(sessions, task)] == [m.id for m in before]

        throwaway_pg.stop()
        during = [msg("user", f"secret during outage {i}") for i in range(6)]
        for message in during:
            assert timed_submit(writer, call(task, app_id="app"), [message])
        assert writer.submit_update(task, before[1].id, "a1 (cut)", True)
        deadline = time.monotonic() + 10
        while writer.failed_writes < 2:
            assert time.monotonic() < deadline, "the writer never tried to write"
            await asyncio.sleep(0.05)
        assert writer.pending == len(during) + 1
        late = msg("user", "still down")
        assert timed_submit(writer, call(task), [late])
        assert "transcript write failed" in caplog.text
        assert "secret" not in caplog.text  # types only, never content

        throwaway_pg.start()
        await writer.flush(timeout=20)
        rows = await stored(sessions, task)
        assert [r.id for r in rows] == [m.id for m in [*before, *during, late]]
        assert (rows[1].content, rows[1].interrupted) == ("a1 (cut)", True)
        assert writer.pending == 0 and writer.dropped == 0 and writer.rejected == 0
        assert writer.written == 1 + len(during) + 2
    finally:
        await writer.close(timeout=2)
        await engine.dispose()
