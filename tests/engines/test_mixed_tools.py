"""Server-side tools next to the caller's own tools, streaming or not (issue 16, item 3)."""

from __future__ import annotations

import httpx
import orjson
import pytest

from tests.gateway.test_tool_loop import ADMIN, proxy, tool_server  # noqa: F401 (fixtures)

BOOK = {
    "type": "function",
    "function": {
        "name": "book_table",
        "description": "Book a table.",
        "parameters": {"type": "object", "properties": {"time": {"type": "string"}}},
    },
}
HEADERS = {"Authorization": "Bearer agent-key", "X-Room-Id": "room-1"}


def post(proxy, task: str, messages: list, *, stream: bool, tools=(BOOK,)) -> httpx.Response:  # noqa: F811
    body = {"model": "m", "stream": stream, "messages": messages, "tools": list(tools)}
    return httpx.post(
        proxy.base_url + "/chat/completions",
        json=body,
        headers={**HEADERS, "X-Task-Id": task},
        timeout=20,
    )


def events(response: httpx.Response) -> list[dict]:
    return [orjson.loads(x[6:]) for x in response.text.split("\n") if x.startswith("data: {")]


def stored(proxy, task: str) -> list[dict]:  # noqa: F811
    got = httpx.get(f"{proxy.url}/admin/tasks/{task}", headers={"Authorization": f"Bearer {ADMIN}"})
    return [
        {k: m[k] for k in ("role", "content", "tool_calls", "tool_call_id") if m.get(k)}
        for m in got.json()["messages"]
    ]


SCRIPT = [
    {"tool_calls": [{"id": "call_w", "name": "weather", "arguments": {"city": "Paris"}}]},
    {"tool_calls": [{"id": "call_b", "name": "book_table", "arguments": {"time": "19:00"}}]},
]
WEATHER_CALL = {
    "id": "call_w",
    "type": "function",
    "function": {"name": "weather", "arguments": '{"city":"Paris"}'},
}
BOOK_CALL = {
    "id": "call_b",
    "type": "function",
    "function": {"name": "book_table", "arguments": '{"time":"19:00"}'},
}
WEATHER_RESULT = '{"city":"Paris","sky":"sunny","celsius":24}'


@pytest.mark.parametrize("stream", [True, False], ids=["streaming", "non-streaming"])
def test_the_proxy_runs_its_tools_and_hands_the_callers_back(proxy, mock, tool_server, stream):  # noqa: F811
    task = f"mixed-{stream}"
    mock.script([*SCRIPT, {"reply": "Booked for seven."}])
    ask = [{"role": "user", "content": "Sunny enough to eat outside? Book 7pm."}]
    response = post(proxy, task, ask, stream=stream)
    assert response.status_code == 200, response.text
    if stream:
        got = events(response)
        text = "".join(c["delta"].get("content") or "" for e in got for c in e.get("choices", []))
        assert text == "Let me check the weather."  # the filler of the server-side tool
        deltas = [
            c["delta"] for e in got for c in e.get("choices", []) if "tool_calls" in c["delta"]
        ]
        assert deltas == [{"tool_calls": [{**BOOK_CALL, "index": 0}]}]
        finishes = [c["finish_reason"] for e in got for c in e.get("choices", [])]
        assert [f for f in finishes if f] == ["tool_calls"]
    else:
        message = response.json()["choices"][0]["message"]
        assert message["tool_calls"] == [BOOK_CALL]
        assert response.json()["choices"][0]["finish_reason"] == "tool_calls"
    assert [call[0] for call in tool_server.calls] == ["/weather"]  # run once, by the proxy
    first, second = mock.requests[0].body, mock.requests[1].body
    assert [t["function"]["name"] for t in first["tools"]] == [
        "book_table",
        "weather",
        "clock",
        "broken",
        "slow",
    ]
    assert second["messages"][-2:] == [
        {
            "role": "assistant",
            "content": "Let me check the weather." if stream else None,
            "tool_calls": [WEATHER_CALL],
        },
        {"role": "tool", "content": WEATHER_RESULT, "tool_call_id": "call_w"},
    ]
    # The caller runs its tool and sends the result: the model answers.
    follow = [
        *ask,
        {"role": "assistant", "content": None, "tool_calls": [BOOK_CALL]},
        {"role": "tool", "tool_call_id": "call_b", "content": '{"booked": true}'},
    ]
    response = post(proxy, task, follow, stream=stream)
    assert response.status_code == 200
    spoken = (
        "".join(c["delta"].get("content") or "" for e in events(response) for c in e["choices"])
        if stream
        else response.json()["choices"][0]["message"]["content"]
    )
    assert spoken == "Booked for seven."
    filler = {"content": "Let me check the weather."} if stream else {}
    assert stored(proxy, task) == [
        ask[0],
        {"role": "assistant", **filler, "tool_calls": [WEATHER_CALL]},
        {"role": "tool", "content": WEATHER_RESULT, "tool_call_id": "call_w"},
        {"role": "assistant", "tool_calls": [BOOK_CALL]},
        {"role": "tool", "content": '{"booked": true}', "tool_call_id": "call_b"},
        {"role": "assistant", "content": "Booked for seven."},
    ]
    assert len(mock.requests) == 3


@pytest.mark.parametrize("stream", [True, False])
def test_a_caller_tool_named_like_a_server_tool_is_a_400(proxy, mock, stream):  # noqa: F811
    clash = {**BOOK, "function": {**BOOK["function"], "name": "weather"}}
    response = post(
        proxy, "clash", [{"role": "user", "content": "hi"}], stream=stream, tools=[clash]
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "tool_name_conflict" and error["param"] == "tools"
    assert "'weather'" in error["message"]
    assert mock.requests == []
