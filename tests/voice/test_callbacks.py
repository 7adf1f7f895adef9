"""The engine's signed callbacks against a real proxy (real Redis, SQLite file)."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest

from proxy.context.memory_store import MemoryHistoryStore
from proxy.db.repositories import EventRepository, TaskRepository
from proxy.db.session import make_engine, make_sessionmaker
from proxy.errors import ServiceUnavailable
from proxy.voice.callbacks import CallbackService
from proxy.voice.events import EngineEvent, parse_event
from proxy.voice.signing import sign
from proxy.voice.spoken import SpokenTextReconciler
from tests.context.engine_calls import SYSTEM, assistant, engine_headers, say, task_key, user
from tests.context.test_conversation import ADMIN, stored, upstream_messages

KEY = "callbackKey123"


@pytest.fixture
def proxy(make_proxy):
    return make_proxy(
        redis=True, admin_token=ADMIN, callback_sign_key=KEY, spoken_grace_seconds=0.3
    )


def db_rows(proxy, query: str, *args) -> list[tuple]:
    path = proxy.settings.database_url.split("///", 1)[1]
    with sqlite3.connect(path) as connection:
        return connection.execute(query, args).fetchall()


def event(event_type: int, task_id: str, payload: dict, ms: int | None = None) -> dict:
    """The shape of the product documents' examples."""
    return {
        "EventGroupId": 9,
        "EventType": event_type,
        "CallbackTs": 1687770730166,
        "EventInfo": {
            "EventMsTs": ms or int(time.time() * 1000),
            "TaskId": task_id,
            "RoomId": "1234",
            "RoomIdType": 0,
            "Payload": payload,
        },
    }


def post(proxy, body: dict | bytes, key: str = KEY) -> httpx.Response:
    raw = body if isinstance(body, bytes) else json.dumps(body, indent="\t").encode()
    headers = {"Content-Type": "application/json", "Sign": sign(key, raw), "SdkAppId": "1400000001"}
    return httpx.post(proxy.url + "/callbacks/trtc", content=raw, headers=headers)


def wait_for(predicate, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    return predicate()


def new_task() -> str:
    return f"task-{uuid.uuid4().hex[:8]}"


DOCUMENT_EXAMPLES = [
    (901, {"Status": 0}),
    (909, {"Status": "session_ready"}),
    (903, {"UserId": "", "Text": "hello", "StartTimeMs": 1234, "EndTimeMs": 1269, "RoundId": "r1"}),
    (
        903,
        {
            "type": "subtitle",
            "userid": "xxx",
            "text": "你好",
            "translation_text": "",
            "start_time": "00:30:00",
            "end_time": "00:30:02",
            "roundid": "r2",
            "start_ms_ts": 123245678,
            "end_ms_ts": 123245679,
        },
    ),
    (904, {"UserId": "xxx", "RoundId": "r3"}),
    (904, {"userid": "xxx", "start_time": "00:30:00", "roundid": "r4"}),
    (906, {"Metric": "llm_first_token", "Value": 218, "Tag": {"RoundId": "070c4908-105"}}),
    (908, {"Metric": "llm_error", "Tag": {"RoundId": "070c4908", "Code": 0, "Message": ""}}),
    (902, {"LeaveCode": 0}),
]


def test_every_document_example_is_accepted_and_stored_once(proxy):
    t = new_task()
    for offset, (event_type, payload) in enumerate(DOCUMENT_EXAMPLES):
        body = event(event_type, t, payload, ms=1622186275757 + offset)
        response = post(proxy, body)
        assert response.status_code == 200 and response.json() == {"code": 0}
        assert post(proxy, body).json() == {"code": 0}  # the engine's retry
    rows = wait_for(
        lambda: (
            len(
                db_rows(
                    proxy, "SELECT event_type FROM callback_events WHERE task_id=?", task_key(t)
                )
            )
            == 9
        )
    )
    assert rows
    round_ids = {
        r[0]
        for r in db_rows(proxy, "SELECT round_id FROM callback_events WHERE task_id=?", task_key(t))
    }
    assert {"r1", "r2", "r3", "r4", "070c4908-105", "070c4908"} <= round_ids
    metrics = db_rows(
        proxy, "SELECT metric, value, round_id FROM round_metrics WHERE task_id=?", task_key(t)
    )
    assert sorted(metrics) == [
        ("llm_error", None, "070c4908"),
        ("llm_first_token", 218.0, "070c4908-105"),
    ]
    status = wait_for(
        lambda: db_rows(
            proxy, "SELECT status, end_reason, app_id FROM tasks WHERE task_id=?", task_key(t)
        )
    )
    assert status == [("ended", "leave_code:0", "1400000001")]


def test_bad_signature_malformed_json_and_disabled_callbacks(proxy, make_proxy):
    body = event(901, new_task(), {"Status": 0})
    assert post(proxy, body, key="wrong-key").status_code == 401
    raw = b'{"EventType": 901, "EventInfo": '
    assert post(proxy, raw).status_code == 400
    assert post(proxy, {"EventType": 905}).status_code == 400
    disabled = make_proxy()
    assert post(disabled, body).status_code == 503


def test_905_after_the_turn_corrects_it_to_what_was_spoken(proxy, mock):
    t = new_task()
    say(
        proxy,
        t,
        [SYSTEM, user("tell me about Kyoto")],
        reply="Kyoto has many temples. It was the capital.",
    )
    assert (
        post(
            proxy, event(905, t, {"UserId": "bot", "RoundId": "r1", "Text": "Kyoto has many"})
        ).status_code
        == 200
    )
    turn = stored(proxy, t)[-1]
    assert (turn["content"], turn["interrupted"]) == ("Kyoto has many", True)
    say(proxy, t, [SYSTEM, user("go on")], reply="ok")
    assert upstream_messages(mock)[-2] == assistant("Kyoto has many")


def test_a_retried_905_changes_nothing_more(proxy, mock):
    t = new_task()
    say(proxy, t, [SYSTEM, user("hi")], reply="Hello there, friend.")
    body = event(905, t, {"UserId": "bot", "RoundId": "r1", "Text": "Hello there, friend."})
    post(proxy, body)
    post(proxy, body)
    assert [(m["content"], m["interrupted"]) for m in stored(proxy, t)][-1] == (
        "Hello there, friend.",
        False,
    )


def test_905_before_the_turn_is_written(make_proxy, mock):
    proxy = make_proxy(redis=True, admin_token=ADMIN, callback_sign_key=KEY, spoken_grace_seconds=5)
    t = new_task()
    body = {
        "model": "m",
        "stream": True,
        "messages": [SYSTEM, user("count")],
        "mock": {"reply": "one two three four five six", "chunks": 6, "gap_ms": 150},
    }
    done = threading.Event()

    def stream() -> None:
        httpx.post(
            proxy.base_url + "/chat/completions", json=body, headers=engine_headers(t), timeout=10
        )
        done.set()

    threading.Thread(target=stream).start()
    time.sleep(0.3)  # the reply is still streaming: no assistant turn stored yet
    assert (
        post(
            proxy, event(905, t, {"UserId": "bot", "RoundId": "r1", "Text": "one two"})
        ).status_code
        == 200
    )
    assert done.wait(10)
    turn = wait_for(lambda: stored(proxy, t)[-1] if stored(proxy, t)[-1]["interrupted"] else None)
    assert turn is not None and turn["content"] == "one two"
    assert len(stored(proxy, t)) == 2  # not also added as a separate turn


def test_a_905_matching_nothing_is_added_as_what_the_user_heard(proxy, mock):
    t = new_task()
    welcome = "Welcome to Acme! How can I help?"
    post(proxy, event(905, t, {"UserId": "bot", "RoundId": "r0", "Text": welcome}))
    messages = wait_for(
        lambda: (
            httpx.get(
                f"{proxy.url}/admin/tasks/{task_key(t)}",
                headers={"Authorization": f"Bearer {ADMIN}"},
            )
            .json()
            .get("messages")
        )
    )
    assert [(m["role"], m["content"], m["source"]) for m in messages] == [
        ("assistant", welcome, "spoken")
    ]
    say(proxy, t, [SYSTEM, user("I need help")], reply="Sure.")
    assert upstream_messages(mock) == [SYSTEM, assistant(welcome), user("I need help")]


def test_902_closes_the_task_and_shortens_its_history(make_proxy, mock, redis_prefix):
    import redis

    proxy = make_proxy(
        redis=True, admin_token=ADMIN, callback_sign_key=KEY, history_closed_ttl_seconds=30
    )
    t = new_task()
    say(proxy, t, [SYSTEM, user("bye")], reply="Goodbye!")
    post(proxy, event(902, t, {"LeaveCode": 0}))
    client = redis.Redis.from_url(proxy.settings.redis_url)
    ttl = client.ttl(f"{redis_prefix}{{{task_key(t)}}}:msgs")
    client.close()
    assert 0 < ttl <= 30
    assert wait_for(
        lambda: db_rows(proxy, "SELECT status FROM tasks WHERE task_id=?", task_key(t))
    ) == [("ended",)]
    transcript = wait_for(
        lambda: db_rows(proxy, "SELECT role, content FROM messages WHERE task_id=?", task_key(t))
    )
    assert [(role, orjson.loads(content)) for role, content in transcript] == [
        ("user", "bye"),
        ("assistant", "Goodbye!"),
    ]


# The write-behind record: CallbackService on a real database (SQLite and PostgreSQL).


class NoDedupeStore(MemoryHistoryStore):
    """Redis's dedupe unavailable: every retry reaches the database's unique key."""

    async def mark_once(self, key: str, ttl_seconds: int) -> bool:
        raise TimeoutError("dedupe store stalled")


def engine_event(event_type: int, task_id: str, payload: dict, ms: int) -> EngineEvent:
    return parse_event(event(event_type, task_id, payload, ms=ms))


@pytest.fixture
async def event_db(migrated_database_url: str) -> AsyncIterator[Any]:
    engine = make_engine(migrated_database_url)
    yield make_sessionmaker(engine)
    await engine.dispose()


def service(sessions: Any, store: MemoryHistoryStore | None = None, **options: Any):
    store = store or MemoryHistoryStore()
    spoken = SpokenTextReconciler(store, None, grace_seconds=0.1)
    options.setdefault("flush_seconds", 0.05)
    return CallbackService(
        store, sessions, spoken, closed_ttl_seconds=30, timeout_seconds=0.25, **options
    )


async def stored_events(sessions: Any, task_id: str) -> list[tuple[int, int]]:
    async with sessions() as session:
        rows = await EventRepository(session).for_task(task_id)
        return [(row.event_type, row.event_ms_ts) for row in rows]


async def stored_metrics(sessions: Any, task_id: str) -> list[tuple[str, float | None]]:
    async with sessions() as session:
        rows = await EventRepository(session).metrics_for_task(task_id)
        return sorted((row.metric, row.value) for row in rows)


async def test_events_are_written_in_batches_one_transaction_each(event_db) -> None:
    transactions = 0

    def counting() -> Any:
        nonlocal transactions
        transactions += 1
        return event_db()

    callbacks = service(counting, batch_size=50, flush_seconds=0.2)
    await callbacks.start()
    t = new_task()
    ms = 1_700_000_000_000
    sent = [engine_event(901, t, {"Status": 0}, ms)]
    sent += [
        engine_event(
            906, t, {"Metric": "llm_first_token", "Value": n, "Tag": {"RoundId": f"r{n}"}}, ms + n
        )
        for n in range(1, 119)
    ]
    sent.append(engine_event(902, t, {"LeaveCode": 0}, ms + 200))
    for item in sent:
        started = time.perf_counter()
        assert await callbacks.handle(item, "1400000001") == "accepted"
        assert time.perf_counter() - started < 0.05, "the reply must not wait for the database"
    await callbacks.drain()
    assert callbacks.writer.written == 120 and callbacks.writer.pending == 0
    assert transactions <= 4, transactions  # 50 + 50 + 20, not one per event
    assert len(await stored_events(event_db, t)) == 120
    assert len(await stored_metrics(event_db, t)) == 118
    async with event_db() as session:
        task = await TaskRepository(session).get(t)
        assert task is not None
        assert (task.status, task.end_reason, task.app_id, task.room_id) == (
            "ended",
            "leave_code:0",
            "1400000001",
            "1234",
        )


async def test_a_duplicate_in_a_batch_loses_none_of_the_others(event_db) -> None:
    """With the Redis dedupe down, the unique key skips the retry, not its batch."""
    callbacks = service(event_db, NoDedupeStore(), flush_seconds=60)
    await callbacks.start()
    t = new_task()
    first = engine_event(906, t, {"Metric": "asr", "Value": 1, "Tag": {"RoundId": "r1"}}, 1000)
    await callbacks.handle(first, None)
    await callbacks.writer.flush()
    batch = [
        engine_event(903, t, {"Text": "before", "RoundId": "r2"}, 1001),
        first,  # the engine's retry of an event already stored
        engine_event(906, t, {"Metric": "llm", "Value": 2, "Tag": {"RoundId": "r2"}}, 1002),
        engine_event(906, t, {"Metric": "llm", "Value": 2, "Tag": {"RoundId": "r2"}}, 1002),
        engine_event(909, t, {"Status": "session_ready"}, 1003),
    ]
    for item in batch:
        assert await callbacks.handle(item, None) == "accepted"
    assert callbacks.writer.pending == len(batch)
    await callbacks.drain()
    assert await stored_events(event_db, t) == [(906, 1000), (903, 1001), (906, 1002), (909, 1003)]
    assert await stored_metrics(event_db, t) == [("asr", 1.0), ("llm", 2.0)]  # each once
    assert callbacks.writer.failed_writes == 0 and callbacks.writer.rejected == 0
    async with event_db() as session:
        task = await TaskRepository(session).get(t)
        assert task is not None and task.status == "ready"


async def test_a_full_buffer_refuses_so_that_the_engine_retries(event_db, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="proxy.voice.callbacks")
    callbacks = service(event_db, queue_size=3)  # not started: nothing leaves the buffer
    t = new_task()
    for n in range(3):
        assert await callbacks.handle(engine_event(903, t, {"Text": f"{n}"}, 2000 + n), None) == (
            "accepted"
        )
    for n in range(3, 5):  # never acknowledged when it could not be recorded
        with pytest.raises(ServiceUnavailable):
            await callbacks.handle(engine_event(903, t, {"Text": f"{n}"}, 2000 + n), None)
    assert (callbacks.writer.pending, callbacks.writer.dropped) == (3, 0)
    assert caplog.text.count("callback 903 refused") == 2
    await callbacks.start()
    await callbacks.drain()
    assert await stored_events(event_db, t) == [(903, 2000), (903, 2001), (903, 2002)]


async def test_drain_writes_what_is_queued_then_refuses_more(event_db) -> None:
    callbacks = service(event_db, flush_seconds=60)  # would sit on the batch for a minute
    await callbacks.start()
    t = new_task()
    for n in range(3):
        await callbacks.handle(engine_event(904, t, {"UserId": "u"}, 3000 + n), None)
    await asyncio.sleep(0.05)
    assert callbacks.writer.pending == 3
    await callbacks.drain()
    assert len(await stored_events(event_db, t)) == 3
    with pytest.raises(ServiceUnavailable):  # closed, no spool: refused, not acknowledged
        await callbacks.handle(engine_event(904, t, {"UserId": "u"}, 3100), None)
    assert callbacks.writer.pending == 0
