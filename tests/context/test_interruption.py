"""Interruptions and retries mid-stream: history holds what the caller actually received."""

from __future__ import annotations

import threading
import time
import uuid

import httpx
import orjson
import pytest

from tests.context.engine_calls import SYSTEM, assistant, engine_headers, say, task_key, user
from tests.context.test_conversation import ADMIN, stored, upstream_messages

REPLY = "one two three four five six seven eight"


@pytest.fixture
def proxy(make_proxy):
    return make_proxy(redis=True, admin_token=ADMIN)


def wait_for(predicate, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    return predicate()


def read_then_leave(proxy, task_id: str, request_id: str, events: int, **mock) -> str:
    """Stream a reply, keep ``events`` content events, then hang up (a barge-in)."""
    body = {"model": "m", "stream": True, "messages": [SYSTEM, user("count for me")], "mock": mock}
    received = []
    url = proxy.base_url + "/chat/completions"
    with httpx.stream(
        "POST", url, json=body, headers=engine_headers(task_id, request_id)
    ) as response:
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            for choice in orjson.loads(line[6:]).get("choices", []):
                if choice["delta"].get("content"):
                    received.append(choice["delta"]["content"])
            if len(received) == events:
                break
    return "".join(received)


def last_stored(proxy, task_id):
    try:
        messages = stored(proxy, task_id)
    except AssertionError:
        return None
    return messages[-1] if messages and messages[-1]["role"] == "assistant" else None


def test_interruption_stores_only_the_text_sent(proxy, mock):
    t = f"task-{uuid.uuid4().hex[:8]}"
    heard = read_then_leave(proxy, t, "r1", 3, reply=REPLY, chunks=8, gap_ms=250)
    assert heard == "one two three"
    turn = wait_for(lambda: last_stored(proxy, t))
    assert turn["content"] == heard and turn["interrupted"] is True
    assert wait_for(lambda: mock.requests[0].outcome == "client_closed")
    # The next request carries only what the user heard.
    say(proxy, t, [SYSTEM, user("go on")], reply="nine")
    assert upstream_messages(mock) == [
        SYSTEM,
        user("count for me"),
        assistant(heard),
        user("go on"),
    ]


def test_barge_in_before_the_first_token_keeps_the_user_turn(proxy, mock):
    t = f"task-{uuid.uuid4().hex[:8]}"
    body = {
        "model": "m",
        "stream": True,
        "messages": [SYSTEM, user("are you there?")],
        "mock": {"first_token_ms": 3000},
    }
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            proxy.base_url + "/chat/completions", json=body, headers=engine_headers(t), timeout=0.3
        )
    messages = wait_for(
        lambda: (
            stored(proxy, t)
            if httpx.get(
                f"{proxy.url}/admin/tasks/{task_key(t)}",
                headers={"Authorization": f"Bearer {ADMIN}"},
            ).status_code
            == 200
            else None
        )
    )
    assert [(m["role"], m["content"]) for m in messages] == [("user", "are you there?")]


def test_a_retry_after_an_interrupted_attempt_regenerates_without_duplicating(proxy, mock):
    t = f"task-{uuid.uuid4().hex[:8]}"
    read_then_leave(proxy, t, "r1", 2, reply=REPLY, chunks=8, gap_ms=250)
    wait_for(lambda: last_stored(proxy, t))
    again = say(proxy, t, [SYSTEM, user("count for me")], request_id="r1", reply="all of it")
    assert again == "all of it"
    assert len(mock.requests) == 2  # an interrupted answer is not replayed
    # The retry's prompt holds the question once, not the earlier attempt's partial reply.
    assert upstream_messages(mock) == [SYSTEM, user("count for me")]
    assert [(m["role"], m["content"], m["interrupted"]) for m in stored(proxy, t)] == [
        ("user", "count for me", False),
        ("assistant", "all of it", False),
    ]


def test_a_retry_during_a_stream_takes_over(proxy, mock):
    t = f"task-{uuid.uuid4().hex[:8]}"
    body = {
        "model": "m",
        "stream": True,
        "messages": [SYSTEM, user("count for me")],
        "mock": {"reply": REPLY, "chunks": 8, "gap_ms": 200},
    }
    url = proxy.base_url + "/chat/completions"
    first_lines: list[str] = []
    with httpx.stream("POST", url, json=body, headers=engine_headers(t, "r1"), timeout=10) as first:
        lines = first.iter_lines()
        first_lines.append(next(lines))
        retry: dict[str, str] = {}
        worker = threading.Thread(
            target=lambda: retry.update(
                text=say(
                    proxy,
                    t,
                    [SYSTEM, user("count for me")],
                    request_id="r1",
                    reply=REPLY,
                    chunks=8,
                    gap_ms=20,
                )
            )
        )
        worker.start()
        first_lines.extend(lines)  # the earlier attempt is ended by the takeover
        worker.join(10)
    assert retry["text"] == REPLY
    assert "data: [DONE]" not in first_lines
    assert wait_for(lambda: mock.requests[0].outcome == "client_closed")
    assert [(m["role"], m["content"]) for m in stored(proxy, t)] == [
        ("user", "count for me"),
        ("assistant", REPLY),
    ]
