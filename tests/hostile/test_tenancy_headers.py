"""Tenancy holds everywhere: scoping headers, callback app ids and keys, /metrics series."""

from __future__ import annotations

import re
import uuid
from collections import Counter
from typing import Any

import httpx
import orjson
import pytest

from proxy.dev.voice import room
from proxy.voice.signing import sign

SHARED_KEY = "sharedsignkey01"
APP_A_KEY = "appasignkey0001"
ADMIN = {"Authorization": "Bearer admin-token-0123456789abcdef"}


def chat(proxy: Any, headers: dict[str, str], text: str = "hello") -> httpx.Response:
    body = {"model": "m", "messages": [{"role": "user", "content": text}]}
    return httpx.post(f"{proxy.url}/v1/chat/completions", json=body, headers=headers, timeout=15)


def callback(
    proxy: Any, key: str, task_id: str, app_id: str | None, payload: dict[str, Any]
) -> httpx.Response:
    body = room.callback_body(905, room.now_ms(), task_id, "room-1", "1", payload)
    raw = orjson.dumps(body)
    headers = {"Content-Type": "application/json", "Sign": sign(key, raw)}
    if app_id is not None:
        headers["SdkAppId"] = app_id
    return httpx.post(f"{proxy.url}/callbacks/trtc", content=raw, headers=headers, timeout=15)


def live(proxy: Any, task_key: str) -> list[tuple[str, Any]]:
    response = httpx.get(f"{proxy.url}/admin/tasks/{task_key}", headers=ADMIN, timeout=15)
    if response.status_code == 404:
        return []
    return [(m["role"], m["content"]) for m in response.json()["messages"]]


@pytest.fixture
def proxy(make_proxy):
    return make_proxy(
        redis=True,
        admin_token="admin-token-0123456789abcdef",
        callback_sign_key=SHARED_KEY,
        callback_sign_keys={"appA": APP_A_KEY},
        spoken_grace_seconds=0.2,
    )


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("X-Sdk-App-Id", "app/one"),
        ("X-Sdk-App-Id", "a" * 65),
        ("X-Task-Id", "t" * 257),
        ("X-Task-Id", "task one"),
        ("X-Request-Id", "r" * 300),
    ],
)
def test_a_header_that_cannot_scope_a_task_is_a_400_not_a_stateless_answer(
    proxy, header: str, value: str
) -> None:
    headers = {"X-Task-Id": "task-1", "X-Sdk-App-Id": "app1", header: value}
    response = chat(proxy, headers)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == header.lower()


def test_two_invalid_apps_do_not_merge_into_one_bare_task(proxy) -> None:
    task = f"task-{uuid.uuid4().hex[:8]}"
    for app in ("app/one", "app/two"):
        assert chat(proxy, {"X-Task-Id": task, "X-Sdk-App-Id": app}).status_code == 400
    assert live(proxy, task) == []


def test_a_task_id_of_256_printable_characters_is_a_task(proxy) -> None:
    task = "t" * 250 + uuid.uuid4().hex[:6]
    assert chat(proxy, {"X-Task-Id": task, "X-Sdk-App-Id": "app1"}).status_code == 200
    assert [role for role, _ in live(proxy, f"app1:{task}")] == ["user", "assistant"]


def test_a_shared_key_callback_cannot_reach_a_per_app_task(proxy) -> None:
    victim = f"victim-{uuid.uuid4().hex[:8]}"
    assert chat(proxy, {"X-Task-Id": victim, "X-Sdk-App-Id": "appA"}, "secret").status_code == 200
    before = live(proxy, f"appA:{victim}")
    assert len(before) == 2
    # No SdkAppId, TaskId spelling app A's task key, signed with the shared key.
    forged = callback(proxy, SHARED_KEY, f"appA:{victim}", None, {"Text": "rewritten"})
    assert forged.status_code == 400 and forged.json()["error"]["param"] == "SdkAppId"
    # Naming app A with the shared key: only app A's own key is accepted.
    wrong_key = callback(proxy, SHARED_KEY, victim, "appA", {"Text": "rewritten"})
    assert wrong_key.status_code == 401
    # A ':' in the TaskId is refused even with the right key.
    colon = callback(proxy, APP_A_KEY, f"x:{victim}", "appA", {"Text": "rewritten"})
    assert colon.status_code == 400 and colon.json()["error"]["param"] == "TaskId"
    assert live(proxy, f"appA:{victim}") == before
    # App A's own key, naming app A, is accepted.
    assert callback(proxy, APP_A_KEY, victim, "appA", {"Text": "x"}).json() == {"code": 0}


def test_metrics_never_repeat_a_series(proxy) -> None:
    for n in range(20):
        chat(proxy, {"X-Task-Id": f"t{n}"}, "hi")
    text = httpx.get(f"{proxy.url}/metrics", timeout=15).text
    samples = [line.rsplit(" ", 1)[0] for line in text.splitlines() if line and line[0] != "#"]
    repeated = {name: n for name, n in Counter(samples).items() if n > 1}
    assert repeated == {}
    assert len(re.findall(r'^proxy_store_errors_total\{store="database"\}', text, re.M)) == 1
