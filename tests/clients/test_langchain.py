"""LangChain's ChatOpenAI (langchain-openai) as a client of a real proxy."""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, ToolMessage
from langchain_openai import ChatOpenAI

from tests.clients import scenario as s

pytestmark = pytest.mark.slow  # a real proxy process and a client library: 10-40 s


def test_langchain_streams_uses_tools_retries_and_keeps_history(client_proxy, mock, task_id):
    s.script(mock)
    s.queue_meta(client_proxy.url, task_id)
    llm = ChatOpenAI(
        model=s.MODEL,
        base_url=client_proxy.url + "/v1",
        api_key=s.API_KEY,
        default_headers={"X-Task-Id": task_id},
        timeout=s.CLIENT_TIMEOUT_S,
        max_retries=1,
    )
    messages: list = [HumanMessage(s.HELLO)]

    # 1. A stream with meta.info events in it.
    text = "".join(str(chunk.content) for chunk in llm.stream(messages))
    assert text == s.HI
    messages.append(AIMessage(s.HI))

    # 2. The client's tool.
    messages.append(HumanMessage(s.ASK))
    with_tools = llm.bind_tools([s.WEATHER_TOOL])
    gathered: AIMessageChunk | None = None
    for chunk in with_tools.stream(messages):
        gathered = chunk if gathered is None else gathered + chunk
    assert gathered is not None
    assert [(c["id"], c["name"], c["args"]) for c in gathered.tool_calls] == [
        (s.CALL_ID, "get_weather", s.TOOL_ARGS)
    ]
    messages.append(gathered)
    messages.append(ToolMessage(s.TOOL_RESULT, tool_call_id=s.CALL_ID))
    assert with_tools.invoke(messages).content == s.SUNNY
    messages.append(AIMessage(s.SUNNY))

    # 3. A slow upstream: ChatOpenAI times out after 2 s and retries (max_retries=1).
    messages.append(HumanMessage(s.THANKS))
    assert "".join(str(chunk.content) for chunk in llm.stream(messages)) == s.WELCOME

    s.check_upstream(mock)
    s.check_stored(client_proxy.url, task_id)
