"""Usage records and budgets through real proxies, the real mock upstream and real Redis."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime

import httpx
import openai
import orjson
import pytest
import redis

from proxy.dev.mock.behaviour import reported_usage
from proxy.usage.specs import Budget, ModelPrice
from tests.api.conftest import ADMIN_TOKEN, admin_client
from tests.conftest import REDIS_URL

APP = "1400000001"
PRICE = ModelPrice(input_per_million=2.0, cached_input_per_million=0.5, output_per_million=8.0)


def chat(proxy, key: str, body: dict, **headers: str) -> httpx.Response:
    return httpx.post(
        proxy.base_url + "/chat/completions",
        json={"model": "gpt-test", **body},
        headers={"Authorization": f"Bearer {key}", "X-Sdk-App-Id": APP, **headers},
        timeout=10,
    )


def sse(text: str) -> list[dict]:
    return [
        orjson.loads(line[6:])
        for line in text.split("\n")
        if line.startswith("data: ") and line != "data: [DONE]"
    ]


def test_usage_totals_match_what_the_mock_reported(make_proxy, mock, migrated_database_url):
    proxy = make_proxy(
        redis=True,
        database_url=migrated_database_url,  # SQLite and PostgreSQL
        admin_token=ADMIN_TOKEN,
        prices={"gpt-test": PRICE},
    )
    with admin_client(proxy) as admin:
        created = admin.post("/admin/keys", json={"name": "engine", "app_id": APP}).json()
    key, key_id = created["key"], created["id"]
    turns = [("task-a", True), ("task-a", True), ("task-a", False), ("task-b", True)]
    turns.append(("task-b", False))
    for number, (task, stream) in enumerate(turns):
        body = {
            "stream": stream,
            "messages": [{"role": "user", "content": f"turn {number}: tell me about the sea"}],
            "mock": {"chunks": 4 + number},
        }
        reply = chat(proxy, key, body, **{"X-Task-Id": task, "X-Request-Id": f"r{number}"})
        assert reply.status_code == 200, reply.text
        if stream:  # the proxy asked for usage itself: the caller never sees the chunk
            assert all(event.get("choices") for event in sse(reply.text))
            assert all("usage" not in event for event in sse(reply.text))
    # A caller that asks for usage gets the chunk, and it is recorded once.
    client = openai.OpenAI(base_url=proxy.base_url, api_key=key)
    chunks = list(
        client.chat.completions.create(
            model="gpt-test",
            messages=[{"role": "user", "content": "and the mountains?"}],
            stream=True,
            stream_options={"include_usage": True},
            extra_headers={"X-Task-Id": "task-b", "X-Sdk-App-Id": APP},
        )
    )
    assert chunks[-1].usage is not None
    requests = mock.requests
    assert len(requests) == len(turns) + 1
    assert all(r.body["stream_options"] == {"include_usage": True} for r in requests[:2])
    reported = [reported_usage(r.behaviour, r.body, r.cached_tokens or 0) for r in requests]
    assert chunks[-1].usage.completion_tokens == reported[-1]["completion_tokens"]
    prompt = sum(u["prompt_tokens"] for u in reported)
    cached = sum(u.get("prompt_tokens_details", {}).get("cached_tokens", 0) for u in reported)
    completion = sum(u["completion_tokens"] for u in reported)
    assert cached > 0  # the mock's prompt cache served the tasks' shared prefixes

    with admin_client(proxy) as admin:
        answer = admin.get("/admin/usage", params={"group_by": "task"}).json()
        by_key = admin.get("/admin/usage", params={"key_id": key_id, "group_by": "key,app"}).json()
        other = admin.get("/admin/usage", params={"app_id": "999"}).json()
        tomorrow = admin.get("/admin/usage", params={"from": "2999-01-01"}).json()
        bad = admin.get("/admin/usage", params={"group_by": "colour"})
    cost = ((prompt - cached) * 2.0 + cached * 0.5 + completion * 8.0) / 1_000_000
    assert answer["totals"] == {
        "requests": 6,
        "prompt_tokens": prompt,
        "cached_tokens": cached,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "cost": pytest.approx(cost, rel=1e-9),
    }
    tasks = {row["task_id"]: row for row in answer["items"]}
    assert set(tasks) == {f"{APP}:task-a", f"{APP}:task-b"}
    assert tasks[f"{APP}:task-a"]["requests"] == 3
    assert tasks[f"{APP}:task-a"]["completion_tokens"] == sum(
        u["completion_tokens"] for u in reported[:3]
    )
    assert [(r["key_id"], r["key_name"], r["app_id"], r["requests"]) for r in by_key["items"]] == [
        (key_id, "engine", APP, 6)
    ]
    assert other["totals"]["requests"] == 0
    assert tomorrow["totals"]["requests"] == 0
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "group_by"


def _today_tokens(prefix: str, scope: str) -> int:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        day = datetime.now(UTC).strftime("%Y%m%d")
        return int(client.hget(f"{prefix}budget:{scope}:{day}", "tokens") or 0)
    finally:
        client.close()


def _wait_for_tokens(prefix: str, scope: str, expected: int) -> None:
    """Charging happens behind the reply: wait until the shared counter has it."""
    deadline = time.monotonic() + 5
    while _today_tokens(prefix, scope) != expected:
        assert time.monotonic() < deadline, (_today_tokens(prefix, scope), expected)
        time.sleep(0.02)


@pytest.mark.parametrize("budget", ["key", "app"])
def test_budgets_refuse_at_the_limit_across_two_replicas(make_proxy, mock, redis_prefix, budget):
    limit = 100
    fields = {"redis": True, "admin_token": ADMIN_TOKEN}
    if budget == "app":
        fields["app_budgets"] = {APP: Budget(max_tokens_per_day=limit)}
    first = make_proxy(**fields)
    with admin_client(first) as admin:
        spec = {"name": "tenant", "app_id": APP}
        if budget == "key":
            spec["max_tokens_per_day"] = limit
        created = admin.post("/admin/keys", json=spec).json()
    second = make_proxy(**fields)  # loads the key (and its budget) from the shared database
    scope = f"key:{created['id']}" if budget == "key" else f"app:{APP}"
    body = {"stream": True, "messages": [{"role": "user", "content": "hi there"}]}
    body["mock"] = {"chunks": 6}
    replicas = [first, second]
    spent, answered = 0, 0
    while spent < limit:
        reply = chat(replicas[answered % 2], created["key"], body)
        assert reply.status_code == 200, reply.text
        last = mock.requests[-1]
        spent += reported_usage(last.behaviour, last.body, last.cached_tokens or 0)["total_tokens"]
        answered += 1
        _wait_for_tokens(redis_prefix, scope, spent)
    per_turn = spent // answered
    assert answered == math.ceil(limit / per_turn)  # every turn under the cap was answered
    for replica in replicas:  # past it, both replicas refuse, before calling the upstream
        refused = chat(replica, created["key"], body)
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["code"] == "budget_exceeded"
    assert len(mock.requests) == answered
    # Another app's traffic is not charged to this budget.
    assert _today_tokens(redis_prefix, "app:other") == 0


def test_responses_api_turns_are_recorded_and_budgeted(make_proxy, mock, redis_prefix):
    proxy = make_proxy(
        redis=True,
        admin_token=ADMIN_TOKEN,
        api_keys=["operator-key-0123456789"],
        app_budgets={APP: Budget(max_tokens_per_day=1)},
    )
    headers = {"Authorization": "Bearer operator-key-0123456789", "X-Sdk-App-Id": APP}
    body = {"model": "gpt-test", "input": "hello there", "stream": True}
    first = httpx.post(proxy.url + "/v1/responses", json=body, headers=headers, timeout=10)
    assert first.status_code == 200, first.text
    (request,) = mock.requests
    spent = reported_usage(request.behaviour, request.body, request.cached_tokens or 0)
    _wait_for_tokens(redis_prefix, f"app:{APP}", spent["total_tokens"])
    refused = httpx.post(proxy.url + "/v1/responses", json=body, headers=headers, timeout=10)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "budget_exceeded"
    assert len(mock.requests) == 1
    with admin_client(proxy) as admin:
        totals = admin.get("/admin/usage", params={"app_id": APP}).json()["totals"]
    assert (totals["requests"], totals["total_tokens"]) == (1, spent["total_tokens"])


async def test_retell_calls_are_recorded(make_proxy, mock):
    from websockets.asyncio.client import connect

    from tests.retell.test_llm_websocket import (
        CALL_ID,
        opened,
        reply_to,
        required,
        send,
        user,
        ws_url,
    )

    proxy = make_proxy(redis=True, admin_token=ADMIN_TOKEN, retell_model="gpt-test")
    mock.script([{"reply": "Sure.", "chunks": 2}, {"reply": "Tuesday works.", "chunks": 3}])
    async with connect(ws_url(proxy)) as ws:
        await opened(ws)
        await send(ws, required(1, user("Book me in.")))
        await reply_to(ws, 1)
        await send(ws, required(2, user("Book me in."), {"role": "agent", "content": "Sure."}))
        await reply_to(ws, 2)
    reported = [reported_usage(r.behaviour, r.body, r.cached_tokens or 0) for r in mock.requests]
    assert len(reported) == 2
    with admin_client(proxy) as admin:
        answer = admin.get("/admin/usage", params={"group_by": "task"}).json()
    assert [(row["task_id"], row["requests"]) for row in answer["items"]] == [(CALL_ID, 2)]
    assert answer["totals"]["total_tokens"] == sum(u["total_tokens"] for u in reported)
