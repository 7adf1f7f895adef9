"""Background summarisation through the upstream router, against the mock upstream."""

from __future__ import annotations

import time
import uuid

import httpx

from proxy.settings import ModelRoute, UpstreamTarget
from tests.context.engine_calls import SYSTEM, assistant, say, task_key, user
from tests.context.test_conversation import ADMIN, upstream_messages
from tests.servers import free_port

SUMMARY = "Ana is planning a trip to Kyoto."
KEPT = ["question 3", "answer 3", "question 4", "answer 4"]  # summary_keep_turns=2 of four


def summarising_proxy(make_proxy, *summary_urls: str):
    targets = [UpstreamTarget(base_url=url) for url in summary_urls]
    return make_proxy(
        redis=True,
        admin_token=ADMIN,
        routes={"summariser": ModelRoute(targets=targets)},
        history={
            "summarise": True,
            "summary_threshold_turns": 4,
            "summary_keep_turns": 2,
            "summary_model": "summariser",
        },
    )


def task_view(proxy, task_id: str) -> dict:
    response = httpx.get(
        f"{proxy.url}/admin/tasks/{task_key(task_id)}", headers={"Authorization": f"Bearer {ADMIN}"}
    )
    return response.json()


def four_turns(proxy, task_id: str) -> None:
    for n in range(1, 5):
        say(proxy, task_id, [SYSTEM, user(f"question {n}")], reply=f"answer {n}")


def wait_for_summary(proxy, task_id: str) -> dict:
    deadline = time.monotonic() + 10
    while task_view(proxy, task_id)["summary"] is None and time.monotonic() < deadline:
        time.sleep(0.05)
    return task_view(proxy, task_id)


def test_older_turns_become_a_pinned_summary(make_proxy, mock):
    proxy = summarising_proxy(make_proxy, mock.scenario_url(reply=SUMMARY))
    t = f"task-{uuid.uuid4().hex[:8]}"
    four_turns(proxy, t)
    view = wait_for_summary(proxy, t)
    assert view["summary"] == SUMMARY
    assert [m["content"] for m in view["messages"]] == KEPT
    summary_request = next(r for r in mock.requests if "/s/" in r.path)
    transcript = summary_request.body["messages"][-1]["content"]
    assert "User: question 1" in transcript and "Assistant: answer 2" in transcript
    assert "question 3" not in transcript

    say(proxy, t, [SYSTEM, user("question 5")], reply="answer 5")
    assert upstream_messages(mock) == [
        SYSTEM,
        {"role": "system", "content": f"Summary of the earlier conversation: {SUMMARY}"},
        user("question 3"),
        assistant("answer 3"),
        user("question 4"),
        assistant("answer 4"),
        user("question 5"),
    ]


def test_a_failed_summary_changes_nothing(make_proxy, mock):
    proxy = summarising_proxy(make_proxy, mock.scenario_url(status=500))
    t = f"task-{uuid.uuid4().hex[:8]}"
    four_turns(proxy, t)
    deadline = time.monotonic() + 10
    while proxy.state.summariser.failures == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proxy.state.summariser.failures == 1
    view = task_view(proxy, t)
    assert view["summary"] is None and len(view["messages"]) == 8
    say(proxy, t, [SYSTEM, user("question 5")], reply="answer 5")
    chat_requests = [r for r in mock.requests if "/s/" not in r.path]
    assert len(chat_requests[-1].body["messages"]) == 10


def test_a_summary_falls_back_when_its_first_target_is_dead(make_proxy, mock):
    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there: connection refused
    proxy = summarising_proxy(make_proxy, dead, mock.scenario_url(reply=SUMMARY))
    t = f"task-{uuid.uuid4().hex[:8]}"
    four_turns(proxy, t)
    view = wait_for_summary(proxy, t)
    assert view["summary"] == SUMMARY
    assert [m["content"] for m in view["messages"]] == KEPT
    assert len([r for r in mock.requests if "/s/" in r.path]) == 1
    assert len([r for r in mock.requests if "/s/" not in r.path]) == 4
    assert proxy.state.summariser.failures == 0
    assert proxy.state.router.fallbacks == 1  # the dead target, tried once
