"""One conversation every real client goes through, against a real proxy process and the
mock upstream: stream, use a tool, retry after a timeout, survive meta.info, keep history.

Turns (the mock answers one scripted behaviour per upstream request, in order):

1. "Hello there" -> streamed reply; an operator's meta.info is queued for the task and
   the upstream sends one of its own (PROXY_META_INFO_EVENTS=always: both reach the client).
2. "What is the weather in Paris?" with the client's ``get_weather`` tool -> a tool call
   goes back to the client; it answers with the tool's result -> the model's answer.
3. "Thanks!" -> the upstream is slow: the client times out (2 s) and retries the same
   messages, with no request id -> one answer, the user turn stored once.
"""

from __future__ import annotations

from typing import Any

import httpx

ADMIN_TOKEN = "admin-token-for-client-tests-0123"
API_KEY = "client-key-0123456789"  # bound to APP_ID (tests/clients/conftest.py)
APP_ID = "clients"
MODEL = "mock-voice"
CLIENT_TIMEOUT_S = 2.0  # a normal turn on a loaded CI machine must never reach it

HELLO = "Hello there"
HI = "Hi! How can I help?"
ASK = "What is the weather in Paris?"
TOOL_ARGS = {"city": "Paris"}
CALL_ID = "call_weather_1"
TOOL_RESULT = '{"sky": "sunny", "celsius": 24}'
SUNNY = "It is sunny in Paris."
THANKS = "Thanks!"
WELCOME = "You are welcome."
OPERATOR_META = {"card": "vip"}
UPSTREAM_META = {"source": "upstream"}

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def script(mock: Any) -> None:
    mock.script(
        [
            {"reply": HI, "meta_info": UPSTREAM_META},
            {"tool_calls": [{"id": CALL_ID, "name": "get_weather", "arguments": TOOL_ARGS}]},
            {"reply": SUNNY},
            {"reply": WELCOME, "first_token_ms": 5000},  # the client gives up after 2 s
            {"reply": WELCOME},  # its retry
        ]
    )


def queue_meta(proxy_url: str, task_id: str) -> None:
    response = httpx.post(
        f"{proxy_url}/admin/tasks/{task_id}/metainfo",
        params={"app_id": APP_ID},  # before the task's first turn: name its app
        json={"metainfo": OPERATOR_META},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    assert response.status_code == 202, response.text


def stored(proxy_url: str, task_id: str) -> list[dict[str, Any]]:
    response = httpx.get(
        f"{proxy_url}/admin/tasks/{task_id}",
        params={"app_id": APP_ID},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    assert response.status_code == 200, response.text
    return [
        {k: m[k] for k in ("role", "content", "tool_calls", "tool_call_id") if m.get(k)}
        for m in response.json()["messages"]
    ]


def _call(call_id: str = CALL_ID) -> list[dict[str, Any]]:
    arguments = '{"city":"Paris"}'
    return [
        {
            "id": call_id,
            "type": "function",
            "function": {"name": "get_weather", "arguments": arguments},
        }
    ]


def conversation(call_id: str = CALL_ID) -> list[dict[str, Any]]:
    """The task's history after turn 3's user message, as the upstream must see it."""
    return [
        {"role": "user", "content": HELLO},
        {"role": "assistant", "content": HI},
        {"role": "user", "content": ASK},
        {"role": "assistant", "tool_calls": _call(call_id)},
        {"role": "tool", "content": TOOL_RESULT, "tool_call_id": call_id},
        {"role": "assistant", "content": SUNNY},
        {"role": "user", "content": THANKS},
    ]


def _plain(message: dict[str, Any]) -> dict[str, Any]:
    return {
        k: message[k] for k in ("role", "content", "tool_calls", "tool_call_id") if message.get(k)
    }


def check_upstream(mock: Any, call_id: str = CALL_ID, *, tools_sent: bool = True) -> None:
    """Exactly five upstream requests; the last carries the whole history, once."""
    requests = mock.requests
    assert len(requests) == 5, [r.body.get("messages") for r in requests]
    assert [r.outcome for r in requests] == [
        "completed",
        "completed",
        "completed",
        "client_closed",  # the timed-out attempt: the proxy hung up on the upstream
        "completed",
    ]
    for request in requests:
        assert set(request.body) & {"call", "metadata", "MetaInfo", "user_id"} == set()
    bodies = [[_plain(m) for m in r.body["messages"]] for r in requests]
    whole = conversation(call_id)
    assert bodies[0] == whole[:1]
    assert bodies[1] == whole[:3]
    assert bodies[2] == whole[:5], bodies[2]
    assert bodies[3] == whole
    assert bodies[4] == whole, bodies[4]  # the retry: "Thanks!" once
    if tools_sent:
        assert [t["function"]["name"] for t in requests[1].body["tools"]] == ["get_weather"]


def check_stored(proxy_url: str, task_id: str, call_id: str = CALL_ID) -> None:
    history = stored(proxy_url, task_id)
    assert history == [*conversation(call_id), {"role": "assistant", "content": WELCOME}], history
