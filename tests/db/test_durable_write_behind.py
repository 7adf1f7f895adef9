"""Write-behind with a spool: what was accepted survives the writer, erasure is final.

Against SQLite and PostgreSQL (``migrated_database_url``), with a real spool file.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from proxy.call import CallContext
from proxy.context.history import StoredMessage
from proxy.db.erasure import erase_task
from proxy.db.events import CallbackEventWriter
from proxy.db.models import CallbackEvent, Task, TranscriptMessage, UsageRecord
from proxy.db.session import make_engine, make_sessionmaker
from proxy.db.spool import Spool
from proxy.db.transcript import TranscriptWriter
from proxy.db.write_behind import GROUP_SECONDS
from proxy.upstream.usage import UpstreamUsage
from proxy.usage.records import UsageOwner, UsageWriter, now, usage_row
from proxy.voice.callbacks import event_record
from proxy.voice.events import parse_event

Sessions = async_sessionmaker[AsyncSession]


@pytest.fixture
async def sessions(migrated_database_url: str) -> AsyncIterator[Sessions]:
    engine = make_engine(migrated_database_url)
    yield make_sessionmaker(engine)
    await engine.dispose()


async def count(sessions: Sessions, model: type, task_id: str) -> int:
    async with sessions() as session:
        total = await session.scalar(
            select(func.count()).select_from(model).where(model.task_id == task_id)  # type: ignore[attr-defined]
        )
        return int(total or 0)


def turn(n: int) -> list[StoredMessage]:
    return [
        StoredMessage(role="user", content=f"question {n}"),
        StoredMessage(role="assistant", content=f"answer {n}"),
    ]


def event(task_id: str, n: int) -> dict:
    info = {"EventMsTs": 1_700_000_000_000 + n, "TaskId": task_id, "RoomId": "r", "Payload": {}}
    return {"EventGroupId": 9, "EventType": 903, "EventInfo": info}


async def test_what_was_accepted_is_written_by_the_next_writer(
    sessions: Sessions, tmp_path: Path
) -> None:
    # A writer that never ran (its process died before the database took anything).
    first = Spool(tmp_path).open()
    dead = TranscriptWriter(sessions, spool=first)
    events = CallbackEventWriter(sessions, spool=first)
    for n in range(30):
        assert dead.submit(CallContext(task_id="task-a", app_id="app"), turn(n))
        assert events.submit(event_record(parse_event(event("task-a", n)), "app"))
    assert (dead.pending, events.pending) == (30, 30)
    first.close()  # the process is gone; its spool file stays

    second = Spool(tmp_path).open()
    writer = TranscriptWriter(sessions, spool=second, flush_seconds=0.01)
    replayed = CallbackEventWriter(sessions, spool=second, flush_seconds=0.01)
    await writer.start()
    await replayed.start()
    await writer.flush(timeout=20)
    await replayed.flush(timeout=20)
    assert await count(sessions, TranscriptMessage, "task-a") == 60
    assert await count(sessions, CallbackEvent, "task-a") == 30
    async with sessions() as session:
        task = await session.get(Task, "task-a")
        assert task is not None and task.app_id == "app" and task.room_id == "r"
    assert (writer.pending, replayed.pending, second.count("transcript")) == (0, 0, 0)
    await writer.close()
    await replayed.close()
    second.close()


async def test_memory_holds_a_window_the_spool_holds_the_rest(
    sessions: Sessions, tmp_path: Path
) -> None:
    spool = Spool(tmp_path).open()
    writer = TranscriptWriter(sessions, spool=spool, queue_size=10, batch_size=4)
    for n in range(100):
        assert writer.submit(CallContext(task_id="task-w"), turn(n))
    assert (writer.pending, len(writer._buffer), writer.dropped) == (100, 10, 0)
    await writer.start()
    await writer.flush(timeout=30)
    assert await count(sessions, TranscriptMessage, "task-w") == 200
    async with sessions() as session:
        rows = await session.scalars(
            select(TranscriptMessage.content)
            .where(TranscriptMessage.task_id == "task-w", TranscriptMessage.role == "user")
            .order_by(TranscriptMessage.created_at)
        )
        assert list(rows) == [f"question {n}" for n in range(100)]  # in submission order
    await writer.close()
    spool.close()


async def test_a_closed_writer_still_spools_for_the_next_start(
    sessions: Sessions, tmp_path: Path
) -> None:
    spool = Spool(tmp_path).open()
    writer = TranscriptWriter(sessions, spool=spool)
    await writer.close(timeout=0.1)
    assert writer.submit(CallContext(task_id="task-late"), turn(0))  # shutting down: spooled
    assert spool.count("transcript") == 1
    spool.close()


async def test_erasure_discards_rows_accepted_before_it(sessions: Sessions, tmp_path: Path) -> None:
    spool = Spool(tmp_path).open()
    writer = TranscriptWriter(sessions, spool=spool, flush_seconds=0.01)
    events = CallbackEventWriter(sessions, spool=spool, flush_seconds=0.01)
    # Accepted (queued on "replica A"), then the task is erased (on "replica B").
    for n in range(3):
        writer.submit(CallContext(task_id="task-e"), turn(n))
        events.submit(event_record(parse_event(event("task-e", n)), None))
    writer.submit(CallContext(task_id="task-kept"), turn(0))
    async with sessions() as session, session.begin():
        await erase_task(session, "task-e", at=time.time())
    await writer.start()
    await events.start()
    await writer.flush(timeout=20)
    await events.flush(timeout=20)
    assert await count(sessions, TranscriptMessage, "task-e") == 0
    assert await count(sessions, Task, "task-e") == 0
    assert await count(sessions, CallbackEvent, "task-e") == 0
    assert await count(sessions, TranscriptMessage, "task-kept") == 2
    assert (writer.refused["erased"], events.refused["erased"]) == (3, 3)
    # The task id is not banned: what is accepted after the erasure is recorded.
    writer.submit(CallContext(task_id="task-e"), turn(9))
    await writer.flush(timeout=20)
    assert await count(sessions, TranscriptMessage, "task-e") == 2
    await writer.close()
    await events.close()
    spool.close()


async def test_usage_rows_are_spooled_together_in_groups(
    sessions: Sessions, tmp_path: Path
) -> None:
    """Nobody is answered on a usage row: the rows of ``GROUP_SECONDS`` share one spool
    transaction, made when the group's time is up (or at once on flush or close)."""
    spool = Spool(tmp_path).open()
    writer = UsageWriter(sessions, spool=spool, flush_seconds=0.01)
    owner = UsageOwner(route="m", app_id="app", task_id="task-u")
    usage = UpstreamUsage(prompt_tokens=10, cached_tokens=0, completion_tokens=5)
    for n in range(25):
        assert writer.submit(usage_row(owner, f"model-{n}", usage, 0.0, now()))
    await asyncio.sleep(0)
    assert (writer.pending, spool.count("usage")) == (25, 0)  # not spooled yet
    await asyncio.sleep(GROUP_SECONDS * 1.5)  # the group's time is up
    assert (writer.pending, spool.count("usage")) == (25, 25)
    for n in range(25, 30):  # spooled by close, though their group's time is not up
        assert writer.submit(usage_row(owner, f"model-{n}", usage, 0.0, now()))
    await writer.close(timeout=0.1)
    assert spool.count("usage") == 30
    spool.close()

    replay = Spool(tmp_path).open()  # the next start writes them all, in order
    later = UsageWriter(sessions, spool=replay, flush_seconds=0.01)
    await later.start()
    await later.flush(timeout=20)
    async with sessions() as session:
        models = await session.scalars(
            select(UsageRecord.model)
            .where(UsageRecord.task_id == "task-u")
            .order_by(UsageRecord.id)
        )
        assert list(models) == [f"model-{n}" for n in range(30)]
    await later.close()
    replay.close()
