"""Erasure is final in the live history across replicas (issue 13, item 4).

Replica A streams a reply while replica B erases the task: A's commit lands after the
erasure and must be refused (the erased turn never comes back, live or in the
transcript), and is counted as ``proxy_turns_not_recorded_total{reason="erased"}``. A
turn that begins after the erasure, on either replica, is recorded as usual.
"""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import REDIS_URL
from tests.context.engine_calls import APP_ID, SYSTEM, say, task_key, user
from tests.e2e.procs import ProxyProcess

ADMIN = "admin-token-for-erasure-tests-0123456789"
ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN}"}


class Replica:
    def __init__(self, process: ProxyProcess) -> None:
        self.process = process
        self.url = process.url
        self.base_url = process.url + "/v1"


@pytest.fixture
def replicas(mock: Any, redis_prefix: str, tmp_path: Any) -> Any:
    env = {
        "PROXY_UPSTREAM_BASE_URL": mock.base_url,
        "PROXY_REDIS_URL": REDIS_URL,
        "PROXY_REDIS_PREFIX": redis_prefix,
        "PROXY_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/shared.db",
        "PROXY_ADMIN_TOKEN": ADMIN,
        "PROXY_TRANSCRIPT_FLUSH_SECONDS": "0.2",
    }
    processes = [ProxyProcess(env).start(), ProxyProcess(env).start()]
    yield [Replica(p) for p in processes]
    for process in processes:
        process.stop()


def task_detail(replica: Replica, task: str) -> dict[str, Any] | None:
    response = httpx.get(
        f"{replica.url}/admin/tasks/{task_key(task)}", headers=ADMIN_HEADERS, timeout=10
    )
    if response.status_code == 404:
        return None
    response.raise_for_status()
    detail: dict[str, Any] = response.json()
    return detail


def said(detail: dict[str, Any] | None, part: str) -> list[str]:
    """The user turns of a task's live history (``messages``) or ``transcript``."""
    if detail is None:
        return []
    return [m["content"] for m in detail[part] or () if m["role"] == "user"]


def not_recorded(replica: Replica, reason: str) -> float:
    for line in httpx.get(replica.url + "/metrics", timeout=10).text.splitlines():
        if line.startswith(f'proxy_turns_not_recorded_total{{reason="{reason}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def erase(replica: Replica, task: str) -> int:
    url = f"{replica.url}/admin/tasks/{task_key(task)}"
    return httpx.delete(url, headers=ADMIN_HEADERS, timeout=10).status_code


def say_without_request_id(replica: Replica, task: str, text: str, **mock: Any) -> str:
    """A client that sends no X-Request-Id (its turns are matched by message id)."""
    client = openai.OpenAI(base_url=replica.base_url, api_key="unused", max_retries=0)
    chunks = client.chat.completions.create(
        model="voice-model",
        messages=[SYSTEM, user(text)],  # type: ignore[list-item]
        stream=True,
        extra_headers={"X-Task-Id": task, "X-Sdk-App-Id": APP_ID},
        extra_body={"mock": mock},
    )
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_a_reply_committed_after_the_erasure_never_comes_back(replicas: Any) -> None:
    a, b = replicas
    tasks = [f"erase-{uuid.uuid4().hex[:8]}" for _ in range(4)]
    for task in tasks:
        assert say(a, task, [SYSTEM, user("before")], reply="kept until erased")
    # Each task has a reply streaming on A (six chunks, 0.3 s apart) when B erases it;
    # the client of the last two sends no request id.
    with ThreadPoolExecutor(len(tasks)) as pool:
        streaming = [
            pool.submit(say, a, task, [SYSTEM, user("racing")], reply="erased", gap_ms=300)
            for task in tasks[:2]
        ] + [
            pool.submit(say_without_request_id, a, task, "racing", reply="erased", gap_ms=300)
            for task in tasks[2:]
        ]
        time.sleep(0.7)
        assert [erase(b, task) for task in tasks] == [204] * len(tasks)
        assert [f.result(timeout=30) for f in streaming] == ["erased"] * len(tasks)

    # A refused each racing commit: counted, nothing came back on either replica.
    assert not_recorded(a, "erased") == len(tasks)
    assert not_recorded(b, "erased") == 0
    time.sleep(1.0)  # A's transcript queue would have flushed by now
    for task in tasks:
        assert task_detail(b, task) is None
        assert task_detail(a, task) is None

    # A turn that begins after the erasure is recorded once, on either replica.
    for n, task in enumerate(tasks):
        replica = (a, b)[n % 2]
        assert say(replica, task, [SYSTEM, user("after")], reply="new life") == "new life"
    time.sleep(1.0)
    for task in tasks:
        detail = task_detail(b, task)
        assert said(detail, "messages") == ["after"]
        assert said(detail, "transcript") == ["after"]
    assert not_recorded(a, "erased") == len(tasks)
