"""WriteBehindQueue: queues on one SQLite file take turns with a shared write lock."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession

from proxy.call import CallContext
from proxy.context.history import StoredMessage
from proxy.db.base import Base
from proxy.db.events import CallbackEventWriter, EventRecord
from proxy.db.session import make_engine, make_sessionmaker
from proxy.db.transcript import TranscriptWriter


async def overlapping_transactions(tmp_path: Path, lock: asyncio.Lock | None) -> int:
    """The most write-behind transactions open at once, with both queues busy."""
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path}/{uuid.uuid4().hex}.db")
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    sessions = make_sessionmaker(engine)
    open_now = peak = 0

    @contextlib.asynccontextmanager
    async def tracked() -> AsyncIterator[AsyncSession]:
        nonlocal open_now, peak
        open_now += 1
        peak = max(peak, open_now)
        try:
            async with sessions() as session:
                await asyncio.sleep(0.02)  # a transaction held across a slow event loop
                yield session
        finally:
            open_now -= 1

    options = {"batch_size": 5, "flush_seconds": 0.01, "write_lock": lock}
    transcripts = TranscriptWriter(tracked, **options)  # type: ignore[arg-type]
    events = CallbackEventWriter(tracked, **options)  # type: ignore[arg-type]
    for n in range(20):
        task = f"task-{n % 4}"
        transcripts.submit(CallContext(task_id=task), [StoredMessage(role="user", content=f"{n}")])
        row = {"task_id": task, "event_type": 903, "event_ms_ts": n, "payload": {}}
        events.submit(EventRecord(task, task={"room_id": "r"}, event=row))
    await transcripts.start()
    await events.start()
    await asyncio.gather(transcripts.close(), events.close())
    assert transcripts.written == events.written == 20
    assert transcripts.failed_writes == events.failed_writes == 0
    await engine.dispose()
    return peak


async def test_queues_sharing_a_write_lock_take_turns(tmp_path: Path) -> None:
    assert await overlapping_transactions(tmp_path, asyncio.Lock()) == 1
    assert await overlapping_transactions(tmp_path, None) == 2  # what the lock prevents
