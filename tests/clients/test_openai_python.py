"""The official openai Python SDK (chat completions) as a client of a real proxy."""

from __future__ import annotations

import openai
import pytest

from tests.clients import scenario as s

pytestmark = pytest.mark.slow  # a real proxy process and a client library: 10-40 s


def test_openai_sdk_streams_uses_tools_retries_and_keeps_history(client_proxy, mock, task_id):
    s.script(mock)
    s.queue_meta(client_proxy.url, task_id)
    client = openai.OpenAI(
        base_url=client_proxy.url + "/v1",
        api_key=s.API_KEY,
        default_headers={"X-Task-Id": task_id},
        timeout=s.CLIENT_TIMEOUT_S,
        max_retries=1,
    )
    messages: list = [{"role": "user", "content": s.HELLO}]

    # 1. A stream with two meta.info events in it (the operator's, the upstream's).
    chunks = list(client.chat.completions.create(model=s.MODEL, messages=messages, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == s.HI
    metas = [c for c in chunks if not c.choices]
    assert [(c.object, (c.model_extra or {})["metainfo"]) for c in metas] == [
        ("chat.completion.chunk", s.OPERATOR_META),
        ("chat.completion.chunk", s.UPSTREAM_META),
    ]
    assert {c.id for c in chunks} == {chunks[-1].id}
    messages.append({"role": "assistant", "content": s.HI})

    # 2. The client's tool: its call comes back, the client answers it.
    messages.append({"role": "user", "content": s.ASK})
    calls: dict[int, dict] = {}
    for chunk in client.chat.completions.create(
        model=s.MODEL, messages=messages, tools=[s.WEATHER_TOOL], stream=True
    ):
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls or ():
                call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
                call["id"] += delta.id or ""
                call["name"] += (delta.function and delta.function.name) or ""
                call["arguments"] += (delta.function and delta.function.arguments) or ""
    assert list(calls.values()) == [
        {"id": s.CALL_ID, "name": "get_weather", "arguments": '{"city":"Paris"}'}
    ]
    messages.append(
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": s.CALL_ID,
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": calls[0]["arguments"]},
                }
            ],
        }
    )
    messages.append({"role": "tool", "tool_call_id": s.CALL_ID, "content": s.TOOL_RESULT})
    answer = client.chat.completions.create(
        model=s.MODEL, messages=messages, tools=[s.WEATHER_TOOL]
    )
    assert answer.choices[0].message.content == s.SUNNY
    messages.append({"role": "assistant", "content": s.SUNNY})

    # 3. The upstream is slow: the SDK times out after 2 s and retries by itself.
    messages.append({"role": "user", "content": s.THANKS})
    chunks = list(client.chat.completions.create(model=s.MODEL, messages=messages, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == s.WELCOME

    s.check_upstream(mock)
    s.check_stored(client_proxy.url, task_id)
