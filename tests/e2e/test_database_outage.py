"""PostgreSQL stops during a conversation: chat keeps answering; the transcript arrives later."""

from __future__ import annotations

import asyncio
import time
import uuid

import asyncpg
import pytest

from proxy.db.migrate import upgrade
from tests.context.engine_calls import SYSTEM, say, user
from tests.faults.helpers import post_callback, task_key
from tests.pg_cluster import ThrowawayPostgres

SIGN_KEY = "outagesignkey0123"


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


def query(url: str, sql: str, *args: object) -> list[tuple]:
    async def read() -> list[tuple]:
        connection = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
        try:
            return [tuple(row) for row in await connection.fetch(sql, *args)]
        finally:
            await connection.close()

    return asyncio.run(read())


def transcript(url: str, task_id: str) -> list[tuple[str, str]]:
    sql = "SELECT role, content::text FROM messages WHERE task_id=$1 ORDER BY created_at"
    return [(role, content) for role, content in query(url, sql, task_key(task_id))]


def events(url: str, task_id: str) -> list[int]:
    sql = "SELECT event_type FROM callback_events WHERE task_id=$1 ORDER BY event_ms_ts"
    return [event_type for (event_type,) in query(url, sql, task_key(task_id))]


def wait_until(predicate, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.1)


def test_chat_survives_a_database_outage_and_the_transcript_catches_up(make_proxy, mock, postgres):
    upgrade(postgres.url)
    proxy = make_proxy(
        redis=True,
        database_url=postgres.url,
        transcript_flush_seconds=0.05,
        callback_sign_key=SIGN_KEY,
    )
    task = f"task-{uuid.uuid4().hex[:8]}"
    assert post_callback(proxy, SIGN_KEY, task, 901, {"Status": 0}).status_code == 200
    say(proxy, task, [SYSTEM, user("before")], reply="one")
    wait_until(lambda: len(transcript(postgres.url, task)) == 2 and events(postgres.url, task), 5)

    postgres.stop()
    for n in range(3):  # answered normally, from memory and Redis; callbacks acknowledged
        assert say(proxy, task, [SYSTEM, user(f"during {n}")], reply=f"reply {n}") == f"reply {n}"
        metric = {"Metric": "llm_first_token", "Value": 50 + n, "Tag": {"RoundId": f"r{n}"}}
        assert post_callback(proxy, SIGN_KEY, task, 906, metric).status_code == 200
        assert post_callback(proxy, SIGN_KEY, task, 905, {"Text": f"reply {n}"}).status_code == 200
    assert proxy.state.transcripts.pending > 0
    assert proxy.state.callbacks.writer.pending == 6

    postgres.start()
    wait_until(lambda: len(transcript(postgres.url, task)) >= 8, 20)
    rows = transcript(postgres.url, task)
    assert [role for role, _ in rows] == ["user", "assistant"] * 4
    assert '"during 2"' in rows[6][1] and '"reply 2"' in rows[7][1]
    wait_until(lambda: len(events(postgres.url, task)) >= 7, 20)
    assert events(postgres.url, task) == [901, 906, 905, 906, 905, 906, 905]
    metrics = query(
        postgres.url, "SELECT value FROM round_metrics WHERE task_id=$1", task_key(task)
    )
    assert sorted(value for (value,) in metrics) == [50.0, 51.0, 52.0]
