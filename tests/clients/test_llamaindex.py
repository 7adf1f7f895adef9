"""LlamaIndex's OpenAI LLM (llama-index-llms-openai) as a client of a real proxy."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from llama_index.core.llms import ChatMessage, ChatResponse
from llama_index.llms.openai import OpenAI

from tests.clients import scenario as s

pytestmark = pytest.mark.slow  # a real proxy process and a client library: 10-40 s


def _last(stream: Iterator[ChatResponse]) -> ChatResponse:
    """A LlamaIndex stream's last response holds the whole message."""
    responses = list(stream)
    assert responses, "the stream was empty"
    return responses[-1]


def test_llamaindex_streams_uses_tools_retries_and_keeps_history(client_proxy, mock, task_id):
    s.script(mock)
    s.queue_meta(client_proxy.url, task_id)
    llm = OpenAI(
        model="gpt-4o-mini",  # a name LlamaIndex knows; the mock answers any
        api_base=client_proxy.url + "/v1",
        api_key=s.API_KEY,
        default_headers={"X-Task-Id": task_id},
        timeout=s.CLIENT_TIMEOUT_S,
        max_retries=1,
    )
    messages = [ChatMessage(role="user", content=s.HELLO)]

    # 1. A stream with meta.info events in it.
    last = _last(llm.stream_chat(messages))
    assert last.message.content == s.HI
    messages.append(ChatMessage(role="assistant", content=s.HI))

    # 2. The client's tool.
    messages.append(ChatMessage(role="user", content=s.ASK))
    final = _last(llm.stream_chat(messages, tools=[s.WEATHER_TOOL]))
    calls = final.message.additional_kwargs["tool_calls"]
    assert [(c.id, c.function.name, c.function.arguments) for c in calls] == [
        (s.CALL_ID, "get_weather", '{"city":"Paris"}')
    ]
    messages.append(final.message)
    messages.append(
        ChatMessage(
            role="tool", content=s.TOOL_RESULT, additional_kwargs={"tool_call_id": s.CALL_ID}
        )
    )
    assert llm.chat(messages, tools=[s.WEATHER_TOOL]).message.content == s.SUNNY
    messages.append(ChatMessage(role="assistant", content=s.SUNNY))

    # 3. A slow upstream: the client times out after 2 s and retries (max_retries=1).
    messages.append(ChatMessage(role="user", content=s.THANKS))
    assert _last(llm.stream_chat(messages)).message.content == s.WELCOME

    s.check_upstream(mock)
    s.check_stored(client_proxy.url, task_id)
