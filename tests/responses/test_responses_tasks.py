"""The Responses API on the task model: X-Task-Id, tenants, retries, failures and a
caller leaving mid-stream (real proxy, real mock upstream, real Redis)."""

from __future__ import annotations

import asyncio
import time

import httpx
import openai
import pytest
import redis.asyncio as redis

from proxy.context.redis_store import RedisHistoryStore
from proxy.responses.ids import parse_response_id
from proxy.settings import KeySpec
from tests.conftest import REDIS_URL


def client_for(proxy, key: str = "unused", **headers: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=proxy.base_url, api_key=key, max_retries=0, default_headers=headers
    )


async def stored(prefix: str, task_key: str) -> list[tuple[str, object, bool]]:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        history = await RedisHistoryStore(client, prefix=prefix, ttl_seconds=60).load(task_key, 50)
    finally:
        await client.aclose()
    return [(m.role, m.content, m.interrupted) for m in history.messages]


def wait_for(predicate, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


async def test_x_task_id_names_the_task(make_proxy, mock, redis_prefix):
    proxy = make_proxy(redis=True)
    mock.script([{"reply": "First."}, {"reply": "Second."}])
    client = client_for(proxy, **{"X-Task-Id": "room-42"})
    one = client.responses.create(model="gpt-test", input="one")
    two = client.responses.create(model="gpt-test", input="two")  # no previous_response_id
    assert parse_response_id(one.id).task_key == "room-42"
    assert parse_response_id(two.id).task_key == "room-42"
    assert mock.requests[1].body["messages"] == [
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "First."},
        {"role": "user", "content": "two"},
    ]
    assert await stored(redis_prefix, "room-42") == [
        ("user", "one", False),
        ("assistant", "First.", False),
        ("user", "two", False),
        ("assistant", "Second.", False),
    ]
    with pytest.raises(openai.BadRequestError) as caught:  # another task's response
        client_for(proxy, **{"X-Task-Id": "room-43"}).responses.create(
            model="gpt-test", input="x", previous_response_id=two.id
        )
    assert caught.value.body["code"] == "previous_response_task_mismatch"
    assert len(mock.requests) == 2


def test_a_tenant_cannot_continue_another_tenants_response(make_proxy, mock, monkeypatch):
    monkeypatch.setenv("TEST_KEY_A", "key-a")
    monkeypatch.setenv("TEST_KEY_B", "key-b")
    proxy = make_proxy(
        redis=True,
        keys=[
            KeySpec(name="a", key_env="TEST_KEY_A", app_id="1400000001"),
            KeySpec(name="b", key_env="TEST_KEY_B", app_id="1400000002"),
        ],
    )
    mock.script([{"reply": "Secret of A."}])
    mine = client_for(proxy, "key-a").responses.create(model="gpt-test", input="remember x")
    assert parse_response_id(mine.id).task_key.startswith("1400000001:resp-")
    with pytest.raises(openai.BadRequestError) as caught:
        client_for(proxy, "key-b").responses.create(
            model="gpt-test", input="what did A say?", previous_response_id=mine.id
        )
    assert caught.value.body["code"] == "previous_response_not_found"
    assert len(mock.requests) == 1


def test_a_retry_with_the_same_request_id_is_replayed(make_proxy, mock):
    proxy = make_proxy(redis=True)
    mock.script([{"reply": "Only once."}])
    client = client_for(proxy, **{"X-Task-Id": "t-retry", "X-Request-Id": "req-1"})
    first = client.responses.create(model="gpt-test", input="hello")
    again = client.responses.create(model="gpt-test", input="hello", stream=True)
    final = next(e for e in list(again) if e.type == "response.completed").response
    assert final.output_text == first.output_text == "Only once."
    assert final.id == first.id  # the same turn of the same task
    assert len(mock.requests) == 1


def test_upstream_failure_before_the_first_byte_is_an_error_status(make_proxy, mock):
    proxy = make_proxy(redis=True)
    mock.script([{"status": 500}])
    with pytest.raises(openai.APIStatusError) as caught:
        client_for(proxy).responses.create(model="gpt-test", input="hi", stream=True)
    assert caught.value.status_code == 502
    assert caught.value.body["code"] == "upstream_failure"


def test_upstream_failure_mid_stream_is_response_failed(make_proxy, mock):
    proxy = make_proxy(redis=True)
    mock.script([{"reply": "one two three four", "chunks": 4, "fail_after_chunks": 2}])
    events = list(client_for(proxy).responses.create(model="gpt-test", input="hi", stream=True))
    kinds = [e.type for e in events]
    assert kinds[-1] == "response.failed"
    assert kinds.count("response.output_text.delta") == 2
    assert events[-1].response.status == "failed"
    assert events[-1].response.error.code == "upstream_failure"


async def test_leaving_mid_stream_closes_the_upstream_and_keeps_what_was_sent(
    make_proxy, mock, redis_prefix
):
    proxy = make_proxy(redis=True)
    mock.script([{"reply": "one two three four five six seven eight", "chunks": 8, "gap_ms": 200}])
    body = {"model": "gpt-test", "input": "count", "stream": True}
    headers = {"X-Task-Id": "t-leave"}
    deltas: list[str] = []
    with httpx.stream("POST", proxy.base_url + "/responses", json=body, headers=headers) as r:
        for line in r.iter_lines():
            if line.startswith("data: ") and '"response.output_text.delta"' in line:
                deltas.append(line)
                if len(deltas) == 2:
                    break
    assert wait_for(lambda: mock.requests and mock.requests[0].outcome == "client_closed")
    assert mock.requests[0].ended_at - mock.requests[0].started_at < 1.5
    history = []
    for _ in range(50):
        history = await stored(redis_prefix, "t-leave")
        if len(history) == 2:
            break
        await asyncio.sleep(0.05)
    assert history[0] == ("user", "count", False)
    role, content, interrupted = history[1]
    assert role == "assistant" and interrupted
    assert str(content).split() in (["one", "two"], ["one", "two", "three"])


def test_the_profile_tools_run_server_side(make_proxy, mock, monkeypatch):
    from proxy.settings import ProfileSpec
    from tests.gateway.test_tool_loop import ToolServer

    monkeypatch.setenv("TEST_AGENT_KEY", "agent-key")
    tools = ToolServer()
    admin = "admin-token-for-tests-0123456789"
    try:
        proxy = make_proxy(
            redis=True,
            admin_token=admin,
            keys=[KeySpec(name="agent", key_env="TEST_AGENT_KEY", profile="concierge")],
            profiles={"concierge": ProfileSpec(tools=["weather"])},
        )
        created = httpx.post(
            f"{proxy.url}/admin/tools",
            headers={"Authorization": f"Bearer {admin}"},
            json={
                "name": "weather",
                "description": "The weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                "url": f"{tools.url}/weather",
                "allow_private_network": True,
                "filler": "Let me check.",
            },
        )
        assert created.status_code == 201, created.text
        mock.script(
            [
                {"tool_calls": [{"name": "weather", "arguments": {"city": "Paris"}}]},
                {"reply": "Sunny in Paris."},
            ]
        )
        events = list(
            client_for(proxy, "agent-key").responses.create(
                model="gpt-test", input="Weather in Paris?", stream=True
            )
        )
    finally:
        tools.httpd.shutdown()
    final = events[-1].response
    assert events[-1].type == "response.completed"
    assert [item.type for item in final.output] == ["message"]  # the tool stayed server-side
    assert final.output_text.replace(" ", "") == "Letmecheck.SunnyinParis."
    assert [call[0] for call in tools.calls] == ["/weather"]
    assert len(mock.requests) == 2
    assert [m["role"] for m in mock.requests[1].body["messages"]] == ["user", "assistant", "tool"]
