"""Redis restarts or stalls in the middle of conversations (a throwaway redis-server).

The proxy keeps answering statelessly, every request stays bounded by
``redis_timeout_ms``, and the history resumes without restarting the proxy.
"""

from __future__ import annotations

import time

import httpx
import pytest
import redis

from tests.context.engine_calls import engine_headers
from tests.faults.helpers import (
    ADMIN_HEADERS,
    SYSTEM,
    assert_valid_history,
    chat_body,
    data_events,
    elapsed,
    live_messages,
    new_task,
    post_callback,
    post_chat,
    spoken,
    task_key,
    user,
    wait_for,
)

TIMEOUT_MS = 200
SIGN_KEY = "faultsignkey0123"


def say(proxy, task: str, text: str, reply: str, request_id: str | None = None) -> str:
    response = post_chat(proxy, task, chat_body(text, reply=reply), request_id=request_id)
    assert response.status_code == 200, response.text
    events = data_events(response.text)
    assert events[-1] == "[DONE]"
    return spoken(events)


def prompt(mock) -> list[dict]:
    return mock.requests[-1].body["messages"]


def assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


def readiness(proxy) -> str:
    return httpx.get(proxy.url + "/readyz", timeout=5).json()["status"]


def test_redis_restarts_between_turns(stateful_proxy, mock, throwaway_redis):
    proxy = stateful_proxy(redis_url=throwaway_redis.url, redis_timeout_ms=TIMEOUT_MS)
    task = new_task()
    assert say(proxy, task, "one", "first") == "first"
    assert say(proxy, task, "two", "second") == "second"
    assert prompt(mock) == [SYSTEM, user("one"), assistant("first"), user("two")]

    throwaway_redis.stop()
    # Down: answered without the history, quickly, and /readyz says so; the admin view
    # is a 503. The user heard these replies: they are recorded once Redis is back.
    for n in range(2):
        with elapsed() as took:
            assert say(proxy, task, f"down {n}", f"heard {n}") == f"heard {n}"
        assert took[0] < 2.0
        assert prompt(mock) == [SYSTEM, user(f"down {n}")]
    assert readiness(proxy) == "degraded"
    view = httpx.get(f"{proxy.url}/admin/tasks/{task_key(task)}", headers=ADMIN_HEADERS, timeout=10)
    assert view.status_code == 503, view.text
    assert view.json()["error"]["code"] is not None or view.json()["error"]["message"]
    retries = proxy.state.chat.writer.retries
    assert retries.pending == 2  # the two commits wait for the store

    throwaway_redis.start()  # same port, empty (no persistence): a fresh server
    assert wait_for(lambda: readiness(proxy) == "ready", timeout=10)
    assert wait_for(lambda: retries.pending == 0, timeout=15)
    assert (retries.lost, retries.refused) == (0, 0)
    down = [m for n in range(2) for m in (user(f"down {n}"), assistant(f"heard {n}"))]
    assert say(proxy, task, "three", "third") == "third"
    assert prompt(mock) == [SYSTEM, *down, user("three")]
    assert say(proxy, task, "four", "fourth") == "fourth"
    assert prompt(mock) == [SYSTEM, *down, user("three"), assistant("third"), user("four")]
    view = httpx.get(f"{proxy.url}/admin/tasks/{task_key(task)}", headers=ADMIN_HEADERS, timeout=10)
    assert view.status_code == 200
    messages = view.json()["messages"]
    assert_valid_history(messages)
    # "one" and "two" went with the server's memory (no persistence): nothing brings them
    # back but the transcript. Everything answered since is here, once, in order.
    assert [(m["role"], m["content"]) for m in messages] == [
        ("user", "down 0"),
        ("assistant", "heard 0"),
        ("user", "down 1"),
        ("assistant", "heard 1"),
        ("user", "three"),
        ("assistant", "third"),
        ("user", "four"),
        ("assistant", "fourth"),
    ]


def test_redis_restart_during_a_stream_keeps_the_reply_whole(stateful_proxy, mock, throwaway_redis):
    proxy = stateful_proxy(redis_url=throwaway_redis.url, redis_timeout_ms=TIMEOUT_MS)
    task = new_task()
    say(proxy, task, "one", "first")
    with httpx.stream(
        "POST",
        proxy.base_url + "/chat/completions",
        json=chat_body("two", chunks=10, gap_ms=50),
        headers={"X-Task-Id": task, "X-Request-Id": "r-two"},
        timeout=15,
    ) as response:
        lines = response.iter_lines()
        first = next(line for line in lines if line.startswith("data: "))
        throwaway_redis.stop()  # gone before the commit
        rest = [line for line in lines if line.startswith("data: ")]
    events = [line[6:] for line in [first, *rest]]
    assert events[-1] == "[DONE]"
    assert spoken(events).startswith("Reply to: two")
    throwaway_redis.start()
    assert wait_for(lambda: readiness(proxy) == "ready", timeout=10)
    assert say(proxy, task, "three", "third") == "third"
    assert prompt(mock) == [SYSTEM, user("three")]


def test_a_stalled_redis_bounds_every_request(stateful_proxy, mock, throwaway_redis):
    proxy = stateful_proxy(
        redis_url=throwaway_redis.url,
        redis_timeout_ms=TIMEOUT_MS,
        callback_sign_key=SIGN_KEY,
    )
    task = new_task()
    say(proxy, task, "one", "first")
    throwaway_redis.pause()  # connections stay open, nothing answers
    try:
        for n, request_id in enumerate(["s1", "s2", None]):
            with elapsed() as took:
                text = say(proxy, task, f"stalled {n}", f"reply {n}", request_id=request_id)
            assert text == f"reply {n}"
            # Each store step waits at most redis_timeout_ms: claim or load, then the commit.
            assert took[0] < 6 * TIMEOUT_MS / 1000 + 1.0, took
            assert prompt(mock) == [SYSTEM, user(f"stalled {n}")]
        with elapsed() as took:
            view = httpx.get(
                f"{proxy.url}/admin/tasks/{task_key(task)}", headers=ADMIN_HEADERS, timeout=15
            )
        assert view.status_code == 503
        assert took[0] < 5.0
        with elapsed() as took:
            ready = httpx.get(proxy.url + "/readyz", timeout=15)
        assert ready.status_code == 200 and ready.json()["status"] == "degraded"
        assert took[0] < 3.0
        with elapsed() as took:
            health = httpx.get(proxy.url + "/healthz", timeout=15)
        assert health.status_code == 200 and took[0] < 1.0
        # The engine's callbacks are answered well inside its 5 s deadline.
        with elapsed() as took:
            callback = post_callback(proxy, SIGN_KEY, task, 905, {"UserId": "bot", "Text": "first"})
        assert callback.status_code == 200, callback.text
        assert took[0] < 3.0
    finally:
        throwaway_redis.resume()
    # Back: the turns answered during the stall are recorded, in order and once each
    # (their commits were retried in the background), and the history resumes.
    retries = proxy.state.chat.writer.retries
    assert wait_for(lambda: retries.pending == 0, timeout=15)
    assert retries.lost == 0
    assert say(proxy, task, "two", "second") == "second"
    stalled = [m for n in range(3) for m in (user(f"stalled {n}"), assistant(f"reply {n}"))]
    assert prompt(mock) == [SYSTEM, user("one"), assistant("first"), *stalled, user("two")]
    view = httpx.get(f"{proxy.url}/admin/tasks/{task_key(task)}", headers=ADMIN_HEADERS, timeout=10)
    messages = view.json()["messages"]
    assert_valid_history(messages)
    assert [m["content"] for m in messages] == [
        "one",
        "first",
        *[text for n in range(3) for text in (f"stalled {n}", f"reply {n}")],
        "two",
        "second",
    ]


STALLS = {
    # Redis stops (SIGSTOP): every call times out and waits in its socket buffer; when it
    # resumes each one runs, so the commit that timed out lands late, then its retries.
    "sigstop-request-id": ("sigstop", "r-two"),
    "sigstop-no-request-id": ("sigstop", None),
    # Redis holds writes (CLIENT PAUSE WRITE): a timed-out call's client is gone by the
    # time writes resume, so only a retry can record the turn.
    "client-pause": ("client-pause", "r-two"),
}


@pytest.mark.parametrize(("stall", "request_id"), STALLS.values(), ids=STALLS.keys())
def test_a_commit_that_times_out_in_a_stall_lands_after_it_once(
    stateful_proxy, mock, throwaway_redis, stall, request_id
):
    """The reply does not wait for the store; the turn is recorded once Redis answers."""
    proxy = stateful_proxy(redis_url=throwaway_redis.url, redis_timeout_ms=TIMEOUT_MS)
    retries = proxy.state.chat.writer.retries
    control = redis.Redis.from_url(throwaway_redis.url)
    task = new_task()
    assert say(proxy, task, "one", "first", request_id="r-one") == "first"
    headers = engine_headers(task, request_id)
    if request_id is None:
        del headers["X-Request-Id"]
    try:
        with httpx.stream(
            "POST",
            proxy.base_url + "/chat/completions",
            json=chat_body("two", reply="second", chunks=6, gap_ms=50),
            headers=headers,
            timeout=15,
        ) as response:
            lines = response.iter_lines()
            first = next(line for line in lines if line.startswith("data: "))
            # The history was read; the commit will meet the stall.
            if stall == "sigstop":
                throwaway_redis.pause()
            else:
                control.execute_command("CLIENT", "PAUSE", 60_000, "WRITE")
            with elapsed() as took:
                rest = [line for line in lines if line.startswith("data: ")]
        events = [line[6:] for line in [first, *rest]]
        assert events[-1] == "[DONE]" and spoken(events) == "second"
        # The rest of the stream, then the 905 fold and one commit, each time-boxed.
        assert took[0] < 0.3 + 2 * TIMEOUT_MS / 1000 + 1.0, took
        assert wait_for(lambda: retries.pending == 1, timeout=2)
        time.sleep(2.5)  # several retries time out too
    finally:
        if stall == "sigstop":
            throwaway_redis.resume()
        else:
            control.execute_command("CLIENT", "UNPAUSE")
        control.close()
    assert wait_for(lambda: retries.pending == 0, timeout=10)
    messages = live_messages(proxy, task)
    assert_valid_history(messages)
    assert [m["content"] for m in messages] == ["one", "first", "two", "second"]
    assert retries.recorded >= 1 and retries.lost == 0 and retries.refused == 0
    # The next turn builds on it.
    assert say(proxy, task, "three", "third", request_id="r-three") == "third"
    assert prompt(mock) == [
        SYSTEM,
        user("one"),
        assistant("first"),
        user("two"),
        assistant("second"),
        user("three"),
    ]
    messages = live_messages(proxy, task)
    assert [m["content"] for m in messages] == ["one", "first", "two", "second", "three", "third"]
