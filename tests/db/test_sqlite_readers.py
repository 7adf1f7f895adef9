"""The embedded SQLite file keeps taking writes while a reader is stuck mid-statement.

A console live page left mid-query (its read cancelled) left such a reader: its closed
connection kept the read lock until the garbage collector freed the cursor. In the
rollback journal every write then failed after the 5 s busy timeout ("database is
locked": a 503 for an admin change, transcripts retried); in WAL mode none waits.
"""

from __future__ import annotations

import sqlite3
import uuid

import httpx

from tests.api.conftest import ADMIN_TOKEN, admin_client
from tests.context.engine_calls import SYSTEM, engine_headers, task_key, user


def test_writes_land_while_a_reader_is_stuck_mid_statement(make_proxy, mock, tmp_path):
    proxy = make_proxy(redis=True, admin_token=ADMIN_TOKEN)
    reader = sqlite3.connect(tmp_path / "proxy.db")
    stuck = reader.execute("SELECT name FROM sqlite_master")
    assert stuck.fetchone() is not None  # the statement is open: it holds its read
    task = f"task-{uuid.uuid4().hex[:8]}"
    try:
        with admin_client(proxy) as admin:
            created = admin.post("/admin/keys", json={"name": "written-while-read"})
            assert created.status_code == 201, created.text
            # The first database key turns authentication on: the engine uses it.
            key = {"Authorization": f"Bearer {created.json()['key']}"}
            for n in range(3):
                body = {
                    "model": "m",
                    "messages": [SYSTEM, user(f"turn {n}")],
                    "mock": {"reply": f"reply {n}"},
                }
                reply = httpx.post(
                    proxy.base_url + "/chat/completions",
                    json=body,
                    headers={**engine_headers(task), **key},
                )
                assert reply.status_code == 200, reply.text
            detail = admin.get(f"/admin/tasks/{task_key(task)}")  # flushes the transcript first
            assert detail.status_code == 200, detail.text
            transcript = [m["content"] for m in detail.json()["transcript"]]
            keys = [k["name"] for k in admin.get("/admin/keys").json()]
    finally:
        reader.close()
    assert transcript == ["turn 0", "reply 0", "turn 1", "reply 1", "turn 2", "reply 2"]
    assert keys.count("written-while-read") == 1
