"""Multi-turn conversations over HTTP with real Redis: what the upstream sees each turn."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.context.engine_calls import SYSTEM, assistant, engine_headers, say, task_key, user

ADMIN = "admin-token-for-tests-0123456789"


@pytest.fixture
def proxy(make_proxy):
    return make_proxy(redis=True, admin_token=ADMIN)


def task() -> str:
    return f"task-{uuid.uuid4().hex[:8]}"


def upstream_messages(mock, index: int = -1) -> list[dict]:
    return mock.requests[index].body["messages"]


def stored(proxy, task_id: str) -> list[dict]:
    response = httpx.get(
        f"{proxy.url}/admin/tasks/{task_key(task_id)}", headers={"Authorization": f"Bearer {ADMIN}"}
    )
    assert response.status_code == 200, response.text
    return response.json()["messages"]


def test_history_zero_the_proxy_supplies_the_conversation(proxy, mock):
    t = task()
    say(proxy, t, [SYSTEM, user("Hi, I'm Ana.")], reply="Hello Ana!")
    say(proxy, t, [SYSTEM, user("What's the weather?")], reply="Sunny.")
    say(proxy, t, [SYSTEM, user("And my name?")], reply="Ana.")
    assert upstream_messages(mock) == [
        SYSTEM,
        user("Hi, I'm Ana."),
        assistant("Hello Ana!"),
        user("What's the weather?"),
        assistant("Sunny."),
        user("And my name?"),
    ]


def test_engine_history_is_never_duplicated(proxy, mock):
    t = task()
    say(proxy, t, [SYSTEM, user("one")], reply="first answer")
    say(proxy, t, [SYSTEM, user("one"), assistant("first answer"), user("two")], reply="second")
    request = [SYSTEM, user("one"), assistant("first answer"), user("two"), assistant("second")]
    say(proxy, t, [*request, user("three")], reply="third")
    assert upstream_messages(mock) == [*request, user("three")]
    assert [m["content"] for m in stored(proxy, t)] == [
        "one",
        "first answer",
        "two",
        "second",
        "three",
        "third",
    ]


def test_a_fresh_store_is_seeded_from_engine_history_once(proxy, mock):
    t = task()
    earlier = [user("before restart"), assistant("I remember")]
    say(proxy, t, [SYSTEM, *earlier, user("now")], reply="yes")
    assert upstream_messages(mock) == [SYSTEM, *earlier, user("now")]
    say(proxy, t, [SYSTEM, *earlier, user("now"), assistant("yes"), user("again")], reply="ok")
    assert upstream_messages(mock) == [
        SYSTEM,
        *earlier,
        user("now"),
        assistant("yes"),
        user("again"),
    ]
    assert [m["source"] for m in stored(proxy, t)][:2] == ["seed", "seed"]


def test_user_messages_stay_in_place_and_are_not_stored_as_turns(proxy, mock):
    t = task()
    prompt = [user("Context: the caller is on the premium plan."), assistant("Understood.")]
    say(proxy, t, [SYSTEM, *prompt, user("hello")], reply="hi")
    say(proxy, t, [SYSTEM, *prompt, user("bye")], reply="goodbye")
    assert upstream_messages(mock) == [SYSTEM, *prompt, user("hello"), assistant("hi"), user("bye")]


def test_upstream_sees_only_standard_message_fields(proxy, mock):
    t = task()
    say(proxy, t, [SYSTEM, user("a")], reply="b")
    say(proxy, t, [SYSTEM, user("c")], reply="d")
    for message in upstream_messages(mock):
        assert set(message) <= {"role", "content", "name", "tool_calls", "tool_call_id"}


@pytest.mark.parametrize("stream", [True, False])
def test_a_retried_request_id_is_replayed_without_calling_upstream(proxy, mock, stream):
    t, rid = task(), "req-1"
    first = say(proxy, t, [SYSTEM, user("hello")], reply="Hi there!", request_id=rid, stream=stream)
    again = say(proxy, t, [SYSTEM, user("hello")], reply="other", request_id=rid, stream=stream)
    assert first == again == "Hi there!"
    assert len(mock.requests) == 1
    assert [m["content"] for m in stored(proxy, t)] == ["hello", "Hi there!"]


def test_the_misspelt_request_id_header_is_accepted(proxy, mock):
    t = task()
    headers = engine_headers(t)
    headers["X-Rquest-Id"] = headers.pop("X-Request-Id")
    body = {"model": "m", "messages": [SYSTEM, user("x")], "mock": {"reply": "y"}}
    for _ in range(2):
        httpx.post(proxy.base_url + "/chat/completions", json=body, headers=headers)
    assert len(mock.requests) == 1


def test_two_tasks_never_mix(proxy, mock):
    a, b = task(), task()
    say(proxy, a, [SYSTEM, user("I am task A")], reply="A noted")
    say(proxy, b, [SYSTEM, user("I am task B")], reply="B noted")
    say(proxy, a, [SYSTEM, user("who am I?")], reply="A")
    assert upstream_messages(mock) == [
        SYSTEM,
        user("I am task A"),
        assistant("A noted"),
        user("who am I?"),
    ]


def test_chinese_conversation(proxy, mock):
    t = task()
    say(proxy, t, [SYSTEM, user("你好，我想订一张去北京的机票。")], reply="好的，请问您哪天出发？")
    say(proxy, t, [SYSTEM, user("明天上午。")], reply="明白了。")
    assert upstream_messages(mock) == [
        SYSTEM,
        user("你好，我想订一张去北京的机票。"),
        assistant("好的，请问您哪天出发？"),
        user("明天上午。"),
    ]
    assert stored(proxy, t)[-1]["content"] == "明白了。"


def test_no_task_id_is_a_stateless_pass_through(proxy, mock):
    messages = [SYSTEM, user("a"), assistant("b"), user("c")]
    httpx.post(proxy.base_url + "/chat/completions", json={"model": "m", "messages": messages})
    httpx.post(proxy.base_url + "/chat/completions", json={"model": "m", "messages": messages})
    assert upstream_messages(mock, 0) == upstream_messages(mock, 1) == messages


def test_trimming_keeps_tool_pairs_and_whole_turns(make_proxy, mock):
    proxy = make_proxy(redis=True, admin_token=ADMIN, history={"max_turns": 2})
    t = task()
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {}}}]
    client_body = {"model": "m", "tools": tools}
    call = {"name": "lookup", "arguments": '{"q": "x"}'}
    # A pass-through tool round: the model calls, the caller answers with a tool message.
    headers = engine_headers(t)
    httpx.post(
        proxy.base_url + "/chat/completions",
        json={
            **client_body,
            "messages": [SYSTEM, user("look it up")],
            "mock": {"tool_calls": [call]},
        },
        headers=headers,
    )
    tool_call = stored(proxy, t)[-1]["tool_calls"][0]
    tool_turn = [
        SYSTEM,
        user("look it up"),
        {"role": "assistant", "content": None, "tool_calls": [tool_call]},
        {"role": "tool", "tool_call_id": tool_call["id"], "content": "found it"},
    ]
    httpx.post(
        proxy.base_url + "/chat/completions",
        json={**client_body, "messages": tool_turn, "mock": {"reply": "It is found."}},
        headers=engine_headers(t),
    )
    seen = upstream_messages(mock)
    assert [m["role"] for m in seen] == ["system", "user", "assistant", "tool"]
    for n in range(3):
        say(proxy, t, [SYSTEM, user(f"q{n}")], reply=f"a{n}")
    seen = upstream_messages(mock)
    # Two whole turns and the new one; the tool turn went out whole, never half.
    assert seen == [SYSTEM, user("q0"), assistant("a0"), user("q1"), assistant("a1"), user("q2")]
    for index, message in enumerate(seen):
        if message["role"] == "tool":
            assert any(m.get("tool_calls") for m in seen[:index])


def test_admin_task_view_needs_the_token(proxy, mock):
    t = task()
    say(proxy, t, [SYSTEM, user("hi")], reply="hey")
    url = f"{proxy.url}/admin/tasks/{task_key(t)}"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 401
    messages = stored(proxy, t)
    assert [(m["role"], m["content"], m["interrupted"]) for m in messages] == [
        ("user", "hi", False),
        ("assistant", "hey", False),
    ]
    assert all(m["request_id"] and m["created_at"] > 0 for m in messages)
    missing = httpx.get(
        f"{proxy.url}/admin/tasks/nope", headers={"Authorization": f"Bearer {ADMIN}"}
    )
    assert missing.status_code == 404
