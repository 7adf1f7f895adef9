"""Tasks through the admin API: list and filter, inspect, reset, add context, erase.

Conversations go through the proxy with the engine's headers and the mock upstream;
the durable record is written by the transcript writer, which the admin API flushes
before it reads.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import orjson
import pytest
from sqlalchemy import func, select

from proxy.db.models import CallbackEvent, RoundMetric, Task, TranscriptMessage
from proxy.db.repositories import EventRepository
from proxy.dev.voice import room
from proxy.voice.signing import sign
from tests.api.conftest import ADMIN_TOKEN, admin_client, in_database
from tests.context.engine_calls import (
    APP_ID,
    SYSTEM,
    assistant,
    engine_headers,
    task_key,
    user,
)

SIGN_KEY = "admin-tasks-sign-key"

VIP = {"role": "system", "content": "The caller is a VIP: be extra polite."}


@pytest.fixture
def database(migrated_database_url):
    return migrated_database_url


@pytest.fixture
def proxy(make_proxy, database):
    server = make_proxy(redis=True, admin_token=ADMIN_TOKEN, database_url=database)
    yield server
    server.stop()  # before the database is dropped: the last writes land instead of retrying


@pytest.fixture
def admin(proxy):
    with admin_client(proxy) as client:
        yield client


def new_task() -> str:
    return f"task-{uuid.uuid4().hex[:8]}"


def turn(proxy, task_id: str, text: str, reply: str, *, room: str = "room-1") -> None:
    """One engine request (History = 0: system prompt and the new user turn only)."""
    headers = {**engine_headers(task_id), "X-Room-Id": room}
    body = {"model": "m", "messages": [SYSTEM, user(text)], "mock": {"reply": reply}}
    response = httpx.post(proxy.base_url + "/chat/completions", json=body, headers=headers)
    assert response.status_code == 200, response.text


def upstream_messages(mock) -> list[dict]:
    return mock.requests[-1].body["messages"]


def contents(messages: list[dict]) -> list:
    return [m["content"] for m in messages]


# Listing (rows written straight to the database: exact times, no conversation needed).


def seed_tasks(database: str) -> list[str]:
    """Seven tasks an hour apart, newest last; two of them ended."""
    start = datetime(2026, 3, 1, 8, tzinfo=UTC)
    rows = [
        Task(
            task_id=f"seeded-{i}",
            app_id="app-a" if i < 4 else "app-b",
            room_id=f"room-{i % 2}",
            user_id=f"user-{i % 3}",
            started_at=start + timedelta(hours=i),
            last_activity_at=start + timedelta(hours=i, minutes=5),
            ended_at=start + timedelta(hours=i, minutes=9) if i in (1, 5) else None,
            status="ended" if i in (1, 5) else "active",
        )
        for i in range(7)
    ]

    async def insert(session):
        session.add_all(rows)

    in_database(database, insert)
    return [row.task_id for row in reversed(rows)]  # newest first


def listed(admin, **params) -> dict:
    response = admin.get("/admin/tasks", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def ids(page: dict) -> list[str]:
    return [task["task_id"] for task in page["items"]]


def test_tasks_are_listed_newest_first_and_filtered(admin, database):
    newest_first = seed_tasks(database)
    everything = listed(admin)
    assert everything["total"] == 7 and ids(everything) == newest_first
    assert everything["items"][0]["started_at"] == "2026-03-01T14:00:00Z"

    assert ids(listed(admin, app_id="app-a")) == ["seeded-3", "seeded-2", "seeded-1", "seeded-0"]
    assert ids(listed(admin, room_id="room-1")) == ["seeded-5", "seeded-3", "seeded-1"]
    assert ids(listed(admin, user_id="user-0")) == ["seeded-6", "seeded-3", "seeded-0"]
    assert ids(listed(admin, active="false")) == ["seeded-5", "seeded-1"]
    assert listed(admin, active="true")["total"] == 5
    window = listed(
        admin, started_after="2026-03-01T10:00:00Z", started_before="2026-03-01T12:00:00+00:00"
    )
    assert ids(window) == ["seeded-3", "seeded-2"]
    # Another offset, same instant.
    assert ids(listed(admin, started_after="2026-03-01T22:30:00+09:00")) == ["seeded-6"]
    assert ids(listed(admin, app_id="app-b", active="true", room_id="room-0")) == [
        "seeded-6",
        "seeded-4",
    ]
    assert listed(admin, app_id="nobody") == {"items": [], "total": 0, "offset": 0, "limit": 50}


def test_tasks_are_paged(admin, database):
    newest_first = seed_tasks(database)
    pages = [listed(admin, offset=offset, limit=3) for offset in (0, 3, 6, 9)]
    assert [page["total"] for page in pages] == [7, 7, 7, 7]
    assert [len(page["items"]) for page in pages] == [3, 3, 1, 0]
    assert [task for page in pages for task in ids(page)] == newest_first
    assert pages[1]["offset"] == 3 and pages[1]["limit"] == 3


# Conversations.


def test_conversations_become_tasks_with_a_transcript(proxy, admin, mock):
    lobby, kitchen = new_task(), new_task()
    turn(proxy, lobby, "Hi, I'm Ana.", "Hello Ana!", room="lobby")
    turn(proxy, lobby, "Where is the pool?", "Second floor.", room="lobby")
    turn(proxy, kitchen, "Menu please.", "Here it is.", room="kitchen")

    found = listed(admin, room_id="lobby")
    assert ids(found) == [task_key(lobby)]
    task = found["items"][0]
    assert task["app_id"] == "1400000001" and task["user_id"] == "user-1"
    assert task["ended_at"] is None
    assert set(ids(listed(admin, app_id="1400000001"))) >= {task_key(lobby), task_key(kitchen)}
    assert ids(listed(admin, app_id="1400000002")) == []

    detail = admin.get(f"/admin/tasks/{task_key(lobby)}")
    assert detail.status_code == 200, detail.text
    body = detail.json()
    assert body["task_id"] == task_key(lobby) and body["task"]["room_id"] == "lobby"
    # The engine's task id with ?app_id= addresses the same task; another tenant's does not.
    same = admin.get(f"/admin/tasks/{lobby}", params={"app_id": "1400000001"})
    assert same.json() == body
    assert admin.get(f"/admin/tasks/{lobby}", params={"app_id": "1400000002"}).status_code == 404
    assert admin.get(f"/admin/tasks/{lobby}").json() == body  # the one app that has it
    spoken = ["Hi, I'm Ana.", "Hello Ana!", "Where is the pool?", "Second floor."]
    assert contents(body["messages"]) == spoken
    assert body["total_messages"] == 4 and body["summary"] is None
    assert [m["role"] for m in body["messages"]] == ["user", "assistant"] * 2
    assert {m["source"] for m in body["messages"]} == {"turn"}
    assert all(m["request_id"] and m["id"] and m["interrupted"] is False for m in body["messages"])
    assert contents(body["transcript"]) == spoken
    assert [m["id"] for m in body["transcript"]] == [m["id"] for m in body["messages"]]


def test_an_unknown_task_is_a_404(admin):
    response = admin.get("/admin/tasks/never-seen")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_reset_forgets_the_live_history_but_keeps_the_transcript(proxy, admin, mock):
    t = new_task()
    turn(proxy, t, "My code is 1234.", "Noted.")
    assert admin.post(f"/admin/tasks/{task_key(t)}/reset").status_code == 204
    after = admin.get(f"/admin/tasks/{task_key(t)}").json()
    assert after["messages"] == [] and after["total_messages"] == 0
    assert contents(after["transcript"]) == ["My code is 1234.", "Noted."]

    turn(proxy, t, "What is my code?", "I don't know.")
    assert upstream_messages(mock) == [SYSTEM, user("What is my code?")]


def test_a_context_message_reaches_the_next_turn(proxy, admin, mock):
    t = new_task()
    turn(proxy, t, "Hello.", "Hi!")
    added = admin.post(f"/admin/tasks/{task_key(t)}/messages", json={"content": VIP["content"]})
    assert added.status_code == 201, added.text
    message = added.json()
    assert message["role"] == "system" and message["source"] == "context"
    assert message["content"] == VIP["content"] and message["id"]

    turn(proxy, t, "Book me a table.", "Of course.")
    assert upstream_messages(mock) == [
        SYSTEM,
        user("Hello."),
        assistant("Hi!"),
        VIP,
        user("Book me a table."),
    ]
    detail = admin.get(f"/admin/tasks/{task_key(t)}").json()
    assert detail["messages"][2]["id"] == message["id"]
    assert detail["messages"][2]["source"] == "context"
    assert "context" in {m["source"] for m in detail["transcript"]}


def test_context_can_be_added_before_the_first_turn(proxy, admin, mock):
    t = new_task()
    added = admin.post(
        f"/admin/tasks/{task_key(t)}/messages", json={"role": "user", "content": "I'm Bo."}
    )
    assert added.status_code == 201
    turn(proxy, t, "Who am I?", "Bo.")
    assert upstream_messages(mock) == [SYSTEM, user("I'm Bo."), user("Who am I?")]


@pytest.mark.parametrize(
    "body",
    [{}, {"content": ""}, {"content": "x", "role": "tool"}, {"content": "x", "pinned": True}],
)
def test_invalid_context_messages_are_422(admin, body):
    assert admin.post(f"/admin/tasks/{task_key(new_task())}/messages", json=body).status_code == 422


def seed_callbacks(database: str, task_id: str) -> None:
    async def record(session):
        events = EventRepository(session)
        for event_type, ts in ((901, 1_700_000_000_000), (905, 1_700_000_001_000)):
            await events.record(
                task_id=task_id,
                event_type=event_type,
                event_ms_ts=ts,
                round_id="round-1",
                payload={"EventType": event_type},
            )
        await events.add_metric(
            task_id=task_id, round_id="round-1", metric="llm_first_token", value=321.0, tags={}
        )

    in_database(database, record)


def test_events_and_metrics_are_listed(admin, database):
    t = new_task()
    seed_callbacks(database, task_key(t))
    events = admin.get(f"/admin/tasks/{task_key(t)}/events")
    assert events.status_code == 200
    assert [(e["event_type"], e["round_id"]) for e in events.json()] == [
        (901, "round-1"),
        (905, "round-1"),
    ]
    assert events.json()[1]["payload"] == {"EventType": 905}
    metrics = admin.get(f"/admin/tasks/{task_key(t)}/metrics").json()
    assert [(m["metric"], m["value"]) for m in metrics] == [("llm_first_token", 321.0)]
    assert admin.get("/admin/tasks/unknown/events").status_code == 404  # no app has it
    assert admin.get("/admin/tasks/unknown/events", params={"app_id": "a"}).json() == []


def count_rows(database: str, task_id: str) -> dict[str, int]:
    async def count(session):
        return {
            model.__tablename__: await session.scalar(
                select(func.count()).select_from(model).where(model.task_id == task_id)
            )
            for model in (Task, TranscriptMessage, CallbackEvent, RoundMetric)
        }

    return in_database(database, count)


def test_delete_erases_everything_about_a_task(proxy, admin, mock, database):
    t, other = new_task(), new_task()
    turn(proxy, t, "My card ends in 4242.", "Thanks.")
    turn(proxy, other, "Keep me.", "Kept.")
    seed_callbacks(database, task_key(t))
    admin.get(f"/admin/tasks/{task_key(t)}")  # flushes the transcript writer
    assert count_rows(database, task_key(t)) == {
        "tasks": 1,
        "messages": 2,
        "callback_events": 2,
        "round_metrics": 1,
    }

    assert admin.delete(f"/admin/tasks/{task_key(t)}").status_code == 204
    assert count_rows(database, task_key(t)) == dict.fromkeys(count_rows(database, task_key(t)), 0)
    assert admin.get(f"/admin/tasks/{task_key(t)}").status_code == 404
    assert admin.get(f"/admin/tasks/{task_key(t)}/events").json() == []
    assert admin.get(f"/admin/tasks/{task_key(t)}/metrics").json() == []
    assert admin.delete(f"/admin/tasks/{task_key(t)}").status_code == 204  # idempotent

    turn(proxy, t, "Hello again.", "Hello.")
    assert upstream_messages(mock) == [SYSTEM, user("Hello again.")]
    assert contents(admin.get(f"/admin/tasks/{task_key(other)}").json()["transcript"]) == [
        "Keep me.",
        "Kept.",
    ]


def test_delete_also_erases_callback_events_still_queued(make_proxy, database):
    """A queued event written after the erasure would bring the task record back."""
    proxy = make_proxy(
        redis=True, admin_token=ADMIN_TOKEN, database_url=database, callback_sign_key=SIGN_KEY
    )
    proxy.state.callbacks.writer.flush_seconds = 60.0
    time.sleep(1.0)  # the writer's current wait ends; the next one lasts a minute
    t = new_task()
    event = room.callback_body(901, room.now_ms(), t, "room-1", "1", {"Status": 0})
    raw = orjson.dumps(event)
    headers = {"Sign": sign(SIGN_KEY, raw), "SdkAppId": APP_ID}
    assert (
        httpx.post(proxy.url + "/callbacks/trtc", content=raw, headers=headers).status_code == 200
    )
    assert proxy.state.callbacks.writer.pending == 1

    with admin_client(proxy) as admin:
        assert admin.delete(f"/admin/tasks/{task_key(t)}").status_code == 204
    proxy.stop()  # shutdown writes whatever is still queued
    assert count_rows(database, task_key(t)) == dict.fromkeys(count_rows(database, task_key(t)), 0)
