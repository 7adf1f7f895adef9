"""PostgreSQL stops during a conversation: chat keeps answering; the transcript arrives later."""

from __future__ import annotations

import asyncio
import time
import uuid

import asyncpg
import pytest

from proxy.db.migrate import upgrade
from tests.context.engine_calls import SYSTEM, say, user
from tests.pg_cluster import ThrowawayPostgres


@pytest.fixture
def postgres():
    try:
        cluster = ThrowawayPostgres()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    cluster.start()
    yield cluster
    cluster.stop()
    cluster.remove()


def transcript(url: str, task_id: str) -> list[tuple[str, str]]:
    async def read() -> list[tuple[str, str]]:
        connection = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
        try:
            rows = await connection.fetch(
                "SELECT role, content::text FROM messages WHERE task_id=$1 ORDER BY created_at",
                task_id,
            )
        finally:
            await connection.close()
        return [(r["role"], r["content"]) for r in rows]

    return asyncio.run(read())


def test_chat_survives_a_database_outage_and_the_transcript_catches_up(make_proxy, mock, postgres):
    upgrade(postgres.url)
    proxy = make_proxy(redis=True, database_url=postgres.url, transcript_flush_seconds=0.05)
    task = f"task-{uuid.uuid4().hex[:8]}"
    say(proxy, task, [SYSTEM, user("before")], reply="one")
    deadline = time.monotonic() + 5
    while len(transcript(postgres.url, task)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)

    postgres.stop()
    for n in range(3):  # answered normally, from memory and Redis
        assert say(proxy, task, [SYSTEM, user(f"during {n}")], reply=f"reply {n}") == f"reply {n}"
    assert proxy.state.transcripts.pending > 0

    postgres.start()
    deadline = time.monotonic() + 20
    while len(transcript(postgres.url, task)) < 8 and time.monotonic() < deadline:
        time.sleep(0.1)
    rows = transcript(postgres.url, task)
    assert [role for role, _ in rows] == ["user", "assistant"] * 4
    assert '"during 2"' in rows[6][1] and '"reply 2"' in rows[7][1]
