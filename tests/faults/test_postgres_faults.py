"""PostgreSQL goes away mid-conversation (a throwaway cluster, stopped and started).

Chat keeps answering from Redis; the admin task view degrades (the live history
without the transcript, or a 503 where only the database can answer), always within
a bounded time; when the database is back the transcript catches up, each turn once.
"""

from __future__ import annotations

import asyncio
import time

import asyncpg
import httpx

from proxy.db.migrate import upgrade
from tests.faults.helpers import (
    ADMIN_HEADERS,
    SYSTEM,
    assert_valid_history,
    chat_body,
    data_events,
    elapsed,
    new_task,
    post_callback,
    post_chat,
    spoken,
    task_key,
    user,
    wait_for,
)


def transcript(url: str, task_id: str) -> list[tuple[str, str]]:
    async def read() -> list[tuple[str, str]]:
        connection = await asyncpg.connect(url, timeout=5)
        try:
            rows = await connection.fetch(
                "SELECT role, content::text FROM messages WHERE task_id=$1 ORDER BY created_at",
                task_key(task_id),
            )
        finally:
            await connection.close()
        return [(r["role"], r["content"]) for r in rows]

    return asyncio.run(read())


def say(proxy, task: str, text: str, reply: str) -> str:
    response = post_chat(proxy, task, chat_body(text, reply=reply))
    assert response.status_code == 200, response.text
    return spoken(data_events(response.text))


def test_postgres_outage(stateful_proxy, mock, postgres):
    upgrade(postgres.url)
    proxy = stateful_proxy(database_url=postgres.url, transcript_flush_seconds=0.05)
    task = new_task()
    assert say(proxy, task, "before", "one") == "one"
    assert wait_for(lambda: len(transcript(postgres.url, task)) == 2, timeout=5)

    postgres.stop()
    for n in range(3):
        with elapsed() as took:
            assert say(proxy, task, f"during {n}", f"reply {n}") == f"reply {n}"
        assert took[0] < 2.0
    assert mock.requests[-1].body["messages"][-3:] == [
        user("during 1"),
        {"role": "assistant", "content": "reply 1"},
        user("during 2"),
    ]
    # The task view: the live history, the transcript marked missing (None).
    with elapsed() as took:
        view = httpx.get(
            f"{proxy.url}/admin/tasks/{task_key(task)}", headers=ADMIN_HEADERS, timeout=30
        )
    assert took[0] < 10.0
    assert view.status_code == 200, view.text
    detail = view.json()
    assert detail["transcript"] is None
    assert [m["content"] for m in detail["messages"]] == [
        "before",
        "one",
        *[text for n in range(3) for text in (f"during {n}", f"reply {n}")],
    ]
    assert_valid_history(detail["messages"])
    # Views only the database can answer are a 503 envelope, not a 500 or a hang.
    for path in ("/admin/tasks", f"/admin/tasks/{task_key(task)}/events"):
        with elapsed() as took:
            response = httpx.get(f"{proxy.url}{path}", headers=ADMIN_HEADERS, timeout=30)
        assert took[0] < 10.0, path
        assert response.status_code == 503, (path, response.status_code, response.text)
        assert set(response.json()["error"]) == {"message", "type", "code", "param"}
    # A task the live store does not know is not invented while the database is down.
    missing = httpx.get(
        f"{proxy.url}/admin/tasks/{task_key(new_task())}", headers=ADMIN_HEADERS, timeout=30
    )
    assert missing.status_code == 503, missing.text

    postgres.start()
    assert wait_for(lambda: len(transcript(postgres.url, task)) >= 8, timeout=20)
    rows = transcript(postgres.url, task)
    assert [role for role, _ in rows] == ["user", "assistant"] * 4
    assert '"during 2"' in rows[6][1] and '"reply 2"' in rows[7][1]
    view = httpx.get(f"{proxy.url}/admin/tasks/{task_key(task)}", headers=ADMIN_HEADERS, timeout=30)
    assert view.status_code == 200
    assert len(view.json()["transcript"]) == 8
    assert say(proxy, task, "after", "two") == "two"
    assert mock.requests[-1].body["messages"][0] == SYSTEM
    assert len(mock.requests[-1].body["messages"]) == 10


SIGN_KEY = "faultsignkey0123"


def test_callback_events_received_during_an_outage_are_kept(stateful_proxy, mock, postgres):
    upgrade(postgres.url)
    proxy = stateful_proxy(database_url=postgres.url, callback_sign_key=SIGN_KEY)
    writer = proxy.state.callbacks.writer
    task = new_task()
    assert post_callback(proxy, SIGN_KEY, task, 901, {"Status": 0}).status_code == 200
    assert wait_for(lambda: _events(proxy, task) == 1, timeout=5)
    postgres.stop()
    for n in range(20):  # acknowledged at once: the engine must not retry
        payload = {"Metric": "llm_first_token", "Value": 100 + n, "Tag": {"RoundId": f"r{n}"}}
        with elapsed() as took:
            response = post_callback(proxy, SIGN_KEY, task, 906, payload)
        time.sleep(0.002)  # distinct EventMsTs
        assert response.status_code == 200 and took[0] < 2.0
    assert post_callback(proxy, SIGN_KEY, task, 902, {"LeaveCode": 0}).status_code == 200
    # Held in the bounded buffer (not one task and one transaction each), retried.
    assert wait_for(lambda: writer.failed_writes >= 2, timeout=10)
    assert writer.pending == 21 and writer.dropped == 0
    time.sleep(6)  # a short outage: a failover or a restart takes this long
    postgres.start()
    assert wait_for(lambda: _events(proxy, task) == 22, timeout=15), _events(proxy, task)
    assert writer.pending == 0 and writer.rejected == 0
    metrics = httpx.get(
        f"{proxy.url}/admin/tasks/{task_key(task)}/metrics", headers=ADMIN_HEADERS, timeout=30
    ).json()
    assert sorted(m["value"] for m in metrics) == [100.0 + n for n in range(20)]  # each once
    view = httpx.get(f"{proxy.url}/admin/tasks/{task_key(task)}", headers=ADMIN_HEADERS, timeout=30)
    assert view.json()["task"]["status"] == "ended"


def test_callback_events_beyond_the_memory_window_wait_in_the_spool(stateful_proxy, mock, postgres):
    upgrade(postgres.url)
    proxy = stateful_proxy(database_url=postgres.url, callback_sign_key=SIGN_KEY)
    writer = proxy.state.callbacks.writer
    writer.queue_size = 5  # what a long outage under load comes to, sooner
    task = new_task()
    postgres.stop()
    for n in range(8):
        response = post_callback(proxy, SIGN_KEY, task, 903, {"Text": f"said {n}"})
        assert response.status_code == 200, response.text
        time.sleep(0.002)
    # Memory holds the window; the rest waits on disk. Nothing acknowledged is dropped.
    assert (writer.pending, len(writer._buffer), writer.dropped) == (8, 5, 0)
    scrape = httpx.get(f"{proxy.url}/metrics", timeout=10).text
    assert 'proxy_write_behind_refused_total{queue="callback_event",reason="full"} 0.0' in scrape
    postgres.start()
    assert wait_for(lambda: _events(proxy, task) == 8, timeout=20), _events(proxy, task)
    assert writer.pending == 0 and writer.dropped == 0


def _events(proxy, task: str) -> int:
    response = httpx.get(
        f"{proxy.url}/admin/tasks/{task_key(task)}/events", headers=ADMIN_HEADERS, timeout=30
    )
    return len(response.json()) if response.status_code == 200 else -1
