"""Redis down or stalled: answers keep coming (stateless), /readyz tells, recovery is automatic."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.context.engine_calls import SYSTEM, assistant, engine_headers, say, user
from tests.context.redis_server import redis_server
from tests.context.test_conversation import ADMIN, stored, upstream_messages
from tests.servers import free_port


def test_redis_unreachable_still_answers_and_readyz_reports_it(make_proxy, mock):
    proxy = make_proxy(redis=True, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    assert say(proxy, "task-x", [SYSTEM, user("hello")], reply="hi") == "hi"
    ready = httpx.get(proxy.url + "/readyz")
    assert ready.status_code == 200  # still serving, statelessly
    assert ready.json()["status"] == "degraded"
    assert ready.json()["checks"]["history"].startswith("unavailable")
    strict = make_proxy(
        redis=True, redis_url=f"redis://127.0.0.1:{free_port()}/0", ready_requires_history=True
    )
    assert httpx.get(strict.url + "/readyz").status_code == 503
    assert proxy.state.chat.store_errors > 0
    assert httpx.get(proxy.url + "/healthz").status_code == 200


def test_turns_beyond_the_redis_connections_are_still_recorded(make_proxy, mock):
    """With every connection in use the client refuses a call at once: the turn may be
    answered without history, but it is recorded, once."""
    proxy = make_proxy(redis=True, redis_max_connections=10, admin_token=ADMIN)
    assert proxy.state.history._client.connection_pool.max_connections == 10
    tasks = [f"task-{uuid.uuid4().hex[:8]}" for _ in range(24)]

    def turn(task: str) -> None:
        body = {"model": "m", "stream": True, "messages": [SYSTEM, user(f"hi {task}")]}
        body["mock"] = {"reply": f"hello {task}", "chunks": 4, "gap_ms": 20}
        response = httpx.post(
            proxy.base_url + "/chat/completions",
            json=body,
            headers=engine_headers(task),
            timeout=10,
        )
        assert response.status_code == 200 and "[DONE]" in response.text

    with ThreadPoolExecutor(len(tasks)) as pool:
        list(pool.map(turn, tasks))
    retries = proxy.state.chat.writer.retries
    deadline = time.monotonic() + 15
    while retries.pending and time.monotonic() < deadline:
        time.sleep(0.05)
    for task in tasks:
        messages = [m["content"] for m in stored(proxy, task)]
        assert messages == [f"hi {task}", f"hello {task}"], (task, messages)


@pytest.fixture
def throwaway_redis() -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    with redis_server() as server:
        yield server


def test_a_stalled_redis_never_hangs_a_request_and_recovers(make_proxy, mock, throwaway_redis):
    port, process = throwaway_redis
    proxy = make_proxy(redis=True, redis_url=f"redis://127.0.0.1:{port}/0", redis_timeout_ms=200)
    t = f"task-{uuid.uuid4().hex[:8]}"
    say(proxy, t, [SYSTEM, user("first")], reply="one")
    os.kill(process.pid, signal.SIGSTOP)  # Redis stops answering, connections stay open
    try:
        # Answered without history, within the client's timeout rather than hanging.
        client = httpx.post(
            proxy.base_url + "/chat/completions",
            json={"model": "m", "messages": [SYSTEM, user("second")], "mock": {"reply": "two"}},
            headers=engine_headers(t, "r2"),  # the same tenant as ``say``
            timeout=5,
        )
        assert client.json()["choices"][0]["message"]["content"] == "two"
        assert upstream_messages(mock) == [SYSTEM, user("second")]
    finally:
        os.kill(process.pid, signal.SIGCONT)
    # Redis is back: the turn answered during the stall is recorded (its commit was
    # retried in the background), and the history resumes without restarting the proxy.
    retries = proxy.state.chat.writer.retries
    deadline = time.monotonic() + 15
    while retries.pending and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (retries.pending, retries.lost) == (0, 0)
    say(proxy, t, [SYSTEM, user("third")], reply="three")
    assert upstream_messages(mock) == [
        SYSTEM,
        user("first"),
        assistant("one"),
        user("second"),
        assistant("two"),
        user("third"),
    ]
