"""Tenant isolation: two apps (SdkAppIds) never reach each other's tasks, whatever they send.

Both tenants use the same X-Task-Id on purpose: the proxy keys a task by
``<app id>:<task id>``, so a guessed or leaked task id is worth nothing to another app.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from typing import Any

import httpx
import pytest

from proxy.settings import KeySpec
from proxy.voice.signing import sign

ADMIN = "admin-token-for-tenant-tests-0123456789"
ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN}"}
SHARED_KEY, KEY_B = "shared-callback-key", "app-b-callback-key"
SYSTEM = {"role": "system", "content": "You are a helpful voice assistant."}
SECRET = "Your PIN is 4242."

KEYS = {"app-a": "key-for-app-a", "app-b": "key-for-app-b"}
TENANT_KEYS = [
    KeySpec(name=app, key_sha256=hashlib.sha256(key.encode()).hexdigest(), app_id=app)
    for app, key in KEYS.items()
]
OPERATOR_KEY = "unbound-operator-key"


def headers(
    key: str, task: str, *, app: str | None = None, request_id: str | None = None
) -> dict[str, str]:
    sent = {
        "Authorization": f"Bearer {key}",
        "X-Task-Id": task,
        "X-Request-Id": request_id or uuid.uuid4().hex,
    }
    if app is not None:
        sent["X-Sdk-App-Id"] = app
    return sent


def chat(proxy: Any, sent: dict[str, str], text: str, **mock: Any) -> httpx.Response:
    body = {"model": "voice", "messages": [SYSTEM, {"role": "user", "content": text}]}
    if mock:
        body["mock"] = mock
    return httpx.post(f"{proxy.base_url}/chat/completions", json=body, headers=sent, timeout=15)


def reply_of(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["message"]["content"]


def prompt_texts(mock: Any) -> list[str]:
    return [m["content"] for m in mock.requests[-1].body["messages"]]


def view(proxy: Any, key: str) -> httpx.Response:
    return httpx.get(f"{proxy.url}/admin/tasks/{key}", headers=ADMIN_HEADERS, timeout=15)


@pytest.fixture(params=[True, False], ids=["redis", "memory"])
def proxy(request: pytest.FixtureRequest, make_proxy: Any) -> Any:
    return make_proxy(
        redis=request.param,
        keys=TENANT_KEYS,
        api_keys=[OPERATOR_KEY],
        admin_token=ADMIN,
        callback_sign_key=SHARED_KEY,
        callback_sign_keys={"app-b": KEY_B},
    )


def test_the_same_task_id_is_two_tasks_for_two_apps(proxy, mock):
    task = f"task-{uuid.uuid4().hex[:8]}"
    a = headers(KEYS["app-a"], task, app="app-a")
    b = headers(KEYS["app-b"], task)  # a bound key needs no X-Sdk-App-Id
    assert reply_of(chat(proxy, a, "What is my PIN?", reply=SECRET)) == SECRET

    reply_of(chat(proxy, b, "What did you tell me before?", reply="Nothing yet."))
    assert prompt_texts(mock) == [SYSTEM["content"], "What did you tell me before?"]

    reply_of(chat(proxy, headers(KEYS["app-a"], task), "And again?", reply="4242."))
    assert prompt_texts(mock) == [SYSTEM["content"], "What is my PIN?", SECRET, "And again?"]

    a_view, b_view = view(proxy, f"app-a:{task}").json(), view(proxy, f"app-b:{task}").json()
    assert [m["content"] for m in a_view["messages"]] == [
        "What is my PIN?",
        SECRET,
        "And again?",
        "4242.",
    ]
    assert [m["content"] for m in b_view["messages"]] == [
        "What did you tell me before?",
        "Nothing yet.",
    ]
    # The bare id names both apps' tasks and nothing unscoped: a 409 that lists them.
    both = view(proxy, task)
    assert both.status_code == 409
    assert both.json()["error"]["task_keys"] == [f"app-a:{task}", f"app-b:{task}"]


def test_a_bound_key_naming_another_app_is_refused_and_changes_nothing(proxy, mock):
    task = f"task-{uuid.uuid4().hex[:8]}"
    reply_of(chat(proxy, headers(KEYS["app-a"], task), "Remember 4242.", reply="Noted."))
    calls = len(mock.requests)

    for stream in (False, True):
        sent = headers(KEYS["app-b"], task, app="app-a")
        body = {"model": "voice", "stream": stream, "messages": [{"role": "user", "content": "?"}]}
        refused = httpx.post(f"{proxy.base_url}/chat/completions", json=body, headers=sent)
        assert refused.status_code == 403
        assert refused.json() == {
            "error": {
                "message": "this API key may not act for that X-Sdk-App-Id",
                "type": "permission_error",
                "code": "app_id_mismatch",
                "param": None,
            }
        }
    assert len(mock.requests) == calls
    assert len(view(proxy, f"app-a:{task}").json()["messages"]) == 2
    assert view(proxy, f"app-b:{task}").status_code == 404


def test_a_request_id_is_never_replayed_to_another_app(proxy, mock):
    task, request_id = f"task-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    a = headers(KEYS["app-a"], task, request_id=request_id)
    assert reply_of(chat(proxy, a, "My PIN?", reply=SECRET)) == SECRET
    assert reply_of(chat(proxy, a, "My PIN?", reply="not asked")) == SECRET  # a retry: replayed
    calls = len(mock.requests)

    b = headers(KEYS["app-b"], task, request_id=request_id)
    assert reply_of(chat(proxy, b, "My PIN?", reply="I don't know it.")) == "I don't know it."
    assert len(mock.requests) == calls + 1


def test_a_retry_from_another_app_does_not_take_over_a_stream(proxy, mock):
    task, request_id = f"task-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    body = {
        "model": "voice",
        "stream": True,
        "messages": [{"role": "user", "content": "Tell me a story."}],
        "mock": {"reply": "Once upon a time there was a proxy.", "gap_ms": 40},
    }
    received: list[str] = []

    def stream_a() -> None:
        sent = headers(KEYS["app-a"], task, request_id=request_id)
        with httpx.stream(
            "POST", f"{proxy.base_url}/chat/completions", json=body, headers=sent, timeout=15
        ) as response:
            received.extend(line for line in response.iter_lines() if line.startswith("data:"))

    streaming = threading.Thread(target=stream_a)
    streaming.start()
    time.sleep(0.15)  # A is mid-stream
    b = headers(KEYS["app-b"], task, request_id=request_id)
    reply_of(chat(proxy, b, "Tell me a story.", reply="No."))
    streaming.join(15)
    assert received[-1] == "data: [DONE]"
    text = "".join(
        json.loads(line[5:])["choices"][0]["delta"].get("content") or ""
        for line in received[:-1]
        if '"choices":[{' in line
    )
    assert text == "Once upon a time there was a proxy."


def test_an_unbound_key_acts_for_the_app_the_engine_names(proxy, mock):
    """Operator keys (PROXY_API_KEYS, no app) are trusted for every app: documented."""
    task = f"task-{uuid.uuid4().hex[:8]}"
    reply_of(chat(proxy, headers(KEYS["app-a"], task), "Hi, I'm Ana.", reply="Hello Ana."))
    operator = headers(OPERATOR_KEY, task, app="app-a")
    reply_of(chat(proxy, operator, "Who am I?", reply="Ana."))
    assert prompt_texts(mock)[1:3] == ["Hi, I'm Ana.", "Hello Ana."]
    # Without an app it is a third, unscoped task.
    reply_of(chat(proxy, headers(OPERATOR_KEY, task), "Who am I?", reply="I don't know."))
    assert prompt_texts(mock) == [SYSTEM["content"], "Who am I?"]


def test_an_app_id_that_could_forge_a_key_is_refused(proxy, mock):
    """``app-a:x`` as an app id would make the key ``app-a:x:<task>``: a 400, and no
    task under any key (never a stateless answer, never a bare task)."""
    task = f"task-{uuid.uuid4().hex[:8]}"
    response = chat(proxy, headers(OPERATOR_KEY, task, app="app-a:x"), "Hi.", reply="Hello.")
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert view(proxy, task).status_code == 404
    assert view(proxy, f"app-a:x:{task}").status_code == 404


def callback(proxy: Any, task: str, text: str, *, app: str, key: str) -> httpx.Response:
    raw = json.dumps(
        {
            "EventGroupId": 9,
            "EventType": 905,
            "CallbackTs": int(time.time() * 1000),
            "EventInfo": {
                "EventMsTs": int(time.time() * 1000),
                "TaskId": task,
                "RoomId": "1234",
                "RoomIdType": 0,
                "Payload": {"UserId": "bot", "RoundId": "r1", "Text": text},
            },
        }
    ).encode()
    sent = {"Content-Type": "application/json", "Sign": sign(key, raw), "SdkAppId": app}
    return httpx.post(f"{proxy.url}/callbacks/trtc", content=raw, headers=sent, timeout=15)


def test_callbacks_reach_only_their_own_apps_task(proxy, mock):
    task = f"task-{uuid.uuid4().hex[:8]}"
    reply = "Your table is booked for eight. Anything else?"
    for app in KEYS:
        reply_of(chat(proxy, headers(KEYS[app], task), "Book a table.", reply=reply))

    # app-b's own key authenticates its SdkAppId: the shared key cannot speak for it.
    assert callback(proxy, task, "Your table", app="app-b", key=SHARED_KEY).status_code == 401
    assert callback(proxy, task, "Your table", app="app-b", key=KEY_B).status_code == 200
    assert callback(proxy, task, "Your", app="app-a", key=KEY_B).status_code == 401

    def assistant_of(app: str) -> dict[str, Any]:
        return view(proxy, f"{app}:{task}").json()["messages"][1]

    heard = assistant_of("app-b")
    assert heard["content"] == "Your table" and heard["interrupted"] is True
    assert assistant_of("app-a")["content"] == reply  # untouched

    assert callback(proxy, task, "Your", app="app-a", key=SHARED_KEY).status_code == 200
    assert assistant_of("app-a")["content"] == "Your"
    assert assistant_of("app-b")["content"] == "Your table"


def test_a_callback_app_id_that_is_not_one_is_400(proxy):
    response = callback(proxy, "t", "Hi", app="app-a:t", key=SHARED_KEY)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_long_task_keys_are_stored_durably(make_proxy, mock, migrated_database_url):
    """The longest app id and task id the proxy accepts fit the database (PostgreSQL too)."""
    proxy = make_proxy(admin_token=ADMIN, database_url=migrated_database_url)
    app, task = "a" * 64, "t" * 128
    reply_of(chat(proxy, headers("any", task, app=app), "Hello.", reply="Hi."))
    detail = httpx.get(
        f"{proxy.url}/admin/tasks/{task}", params={"app_id": app}, headers=ADMIN_HEADERS
    ).json()
    assert detail["task"]["app_id"] == app
    assert [m["content"] for m in detail["transcript"]] == ["Hello.", "Hi."]
