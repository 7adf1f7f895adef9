"""The admin API and ``proxy tasks show`` addressed by the engine's bare TaskId.

The engine names its app (``X-Sdk-App-Id``), so its task lives under ``<app>:<task>``.
A bare TaskId finds the one app that has it; several: 409 listing the task keys;
none: 404. A 2xx never queues meta.info where no turn reads it.
"""

from __future__ import annotations

import uuid

import httpx
import orjson
import pytest

from proxy.cli_admin import tasks_main
from tests.api.conftest import ADMIN_TOKEN, admin_client
from tests.context.engine_calls import SYSTEM, assistant, user


@pytest.fixture
def database(migrated_sqlite_url, monkeypatch):
    monkeypatch.setenv("PROXY_DATABASE_URL", migrated_sqlite_url)  # for the CLI
    return migrated_sqlite_url


@pytest.fixture
def proxy(make_proxy, database):
    server = make_proxy(
        redis=True,
        admin_token=ADMIN_TOKEN,
        database_url=database,
        meta_info_events="always",  # an engine that names no app gets them too
    )
    yield server
    server.stop()


@pytest.fixture
def admin(proxy):
    with admin_client(proxy) as client:
        yield client


def turn(proxy, task_id: str, text: str, reply: str, *, app: str | None) -> list[dict]:
    """One engine turn; returns the meta.info objects its reply carried."""
    headers = {"X-Task-Id": task_id, "X-Request-Id": uuid.uuid4().hex}
    if app is not None:
        headers["X-Sdk-App-Id"] = app
    body = {"model": "m", "stream": True, "messages": [SYSTEM, user(text)]}
    body["mock"] = {"reply": reply}
    response = httpx.post(proxy.base_url + "/chat/completions", json=body, headers=headers)
    assert response.status_code == 200, response.text
    events = [orjson.loads(line[6:]) for line in response.text.split("\n") if line[:7] == "data: {"]
    return [event["metainfo"] for event in events if event.get("type") == "meta.info"]


def test_a_bare_task_id_finds_the_one_app_that_has_it(proxy, admin, mock):
    task = f"T-{uuid.uuid4().hex[:8]}"
    assert turn(proxy, task, "Is my card blocked?", "Let me check.", app="1400000001") == []

    view = admin.get(f"/admin/tasks/{task}")
    assert view.status_code == 200, view.text
    assert view.json()["task_id"] == f"1400000001:{task}"
    assert [m["content"] for m in view.json()["messages"]] == [
        "Is my card blocked?",
        "Let me check.",
    ]
    # meta.info queued by the bare id reaches the task's next reply, and only that one.
    queued = admin.post(f"/admin/tasks/{task}/metainfo", json={"metainfo": {"card": "ok"}})
    assert queued.status_code == 202 and queued.json() == {"queued": True}
    added = admin.post(f"/admin/tasks/{task}/messages", json={"content": "The caller is a VIP."})
    assert added.status_code == 201
    assert turn(proxy, task, "And now?", "It is fine.", app="1400000001") == [{"card": "ok"}]
    assert mock.requests[-1].body["messages"] == [
        SYSTEM,
        user("Is my card blocked?"),
        assistant("Let me check."),
        {"role": "system", "content": "The caller is a VIP."},
        user("And now?"),
    ]
    assert turn(proxy, task, "Thanks.", "Bye.", app="1400000001") == []
    assert admin.post(f"/admin/tasks/{task}/reset").status_code == 204
    assert admin.get(f"/admin/tasks/{task}").json()["total_messages"] == 0  # still recorded
    assert admin.delete(f"/admin/tasks/{task}").status_code == 204
    assert admin.get(f"/admin/tasks/{task}").status_code == 404


def test_a_task_id_several_apps_have_is_a_409_listing_their_keys(proxy, admin, mock):
    task = f"T-{uuid.uuid4().hex[:8]}"
    turn(proxy, task, "Hello from A.", "Hi A.", app="appA")
    turn(proxy, task, "Hello from B.", "Hi B.", app="appB")
    for method, suffix, body in [
        ("GET", "", None),
        ("POST", "/metainfo", {"metainfo": {"card": "ok"}}),
        ("POST", "/messages", {"content": "x"}),
        ("POST", "/reset", None),
        ("DELETE", "", None),
        ("GET", "/events", None),
    ]:
        response = admin.request(method, f"/admin/tasks/{task}{suffix}", json=body)
        assert response.status_code == 409, (method, suffix, response.text)
        error = response.json()["error"]
        assert error["code"] == "ambiguous_task" and error["param"] == "app_id"
        assert error["task_keys"] == [f"appA:{task}", f"appB:{task}"]
        assert f"appA:{task}" in error["message"] and f"appB:{task}" in error["message"]
    # Nothing was queued or changed by the refused calls; naming the app works.
    assert turn(proxy, task, "Again A.", "Yes A.", app="appA") == []
    assert mock.requests[-1].body["messages"][-3:] == [
        user("Hello from A."),
        assistant("Hi A."),
        user("Again A."),
    ]
    one = admin.get(f"/admin/tasks/{task}", params={"app_id": "appB"})
    assert one.status_code == 200 and one.json()["task_id"] == f"appB:{task}"
    assert admin.get(f"/admin/tasks/appA:{task}").json()["total_messages"] == 4


def test_a_task_no_app_has_is_a_404_and_metainfo_before_the_first_turn_names_the_app(proxy, admin):
    task = f"T-{uuid.uuid4().hex[:8]}"
    for method, suffix, body in [
        ("GET", "", None),
        ("POST", "/metainfo", {"metainfo": {"card": "ok"}}),
        ("POST", "/messages", {"content": "x"}),
        ("DELETE", "", None),
    ]:
        response = admin.request(method, f"/admin/tasks/{task}{suffix}", json=body)
        assert response.status_code == 404, (method, suffix, response.text)
        assert "?app_id=" in response.json()["error"]["message"]
    queued = admin.post(
        f"/admin/tasks/{task}/metainfo", params={"app_id": "appA"}, json={"metainfo": {"n": 1}}
    )
    assert queued.status_code == 202
    assert turn(proxy, task, "First words.", "Welcome.", app="appA") == [{"n": 1}]


def test_an_engine_without_an_app_keeps_its_bare_task(proxy, admin):
    task = f"T-{uuid.uuid4().hex[:8]}"
    turn(proxy, task, "Hi.", "Hello.", app=None)
    assert admin.get(f"/admin/tasks/{task}").json()["task_id"] == task
    assert (
        admin.post(f"/admin/tasks/{task}/metainfo", json={"metainfo": {"n": 2}}).status_code == 202
    )
    assert turn(proxy, task, "Again.", "Yes.", app=None) == [{"n": 2}]


def test_tasks_show_takes_the_engine_task_id(proxy, admin, capsys):
    task = f"T-{uuid.uuid4().hex[:8]}"
    turn(proxy, task, "Hello from A.", "Hi A.", app="appA")
    admin.get(f"/admin/tasks/{task}")  # flushes the transcript writer
    assert tasks_main(["show", task]) == 0
    out, err = capsys.readouterr()
    assert f"task_id: appA:{task}" in out and "user: Hello from A." in out, err

    turn(proxy, task, "Hello from B.", "Hi B.", app="appB")
    admin.get(f"/admin/tasks/appB:{task}")
    assert tasks_main(["show", task]) == 1
    out, err = capsys.readouterr()
    assert f"appA:{task}, appB:{task}" in err and "--app-id" in err and "Traceback" not in err
    assert tasks_main(["show", task, "--app-id", "appB"]) == 0
    assert f"task_id: appB:{task}" in capsys.readouterr().out
    assert tasks_main(["show", "T-never"]) == 1
    assert "no task 'T-never'" in capsys.readouterr().err
