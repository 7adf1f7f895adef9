"""The OpenAI Agents SDK (``openai-agents``), whose default model speaks the Responses
API, as a client of a real proxy with the real mock upstream and real Redis."""

from __future__ import annotations

import json

import openai
import pytest
from agents import Agent, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled

set_tracing_disabled(True)  # no export to OpenAI from tests


@function_tool
def get_weather(city: str) -> str:
    """Weather for a city."""
    return f"sunny in {city}"


def agent_for(proxy, **fields) -> Agent:
    client = openai.AsyncOpenAI(base_url=proxy.base_url, api_key="unused", max_retries=0)
    model = OpenAIResponsesModel(model="gpt-test", openai_client=client)
    return Agent(name="Assistant", instructions="Be brief.", model=model, **fields)


async def test_run_and_continue_with_previous_response_id(make_proxy, mock):
    proxy = make_proxy(redis=True)
    mock.script([{"reply": "Hello Ann."}, {"reply": "You are Ann."}])
    agent = agent_for(proxy)
    first = await Runner.run(agent, "I am Ann.")
    assert first.final_output == "Hello Ann."
    second = await Runner.run(agent, "Who am I?", previous_response_id=first.last_response_id)
    assert second.final_output == "You are Ann."
    assert len(mock.requests) == 2
    assert mock.requests[1].body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "I am Ann."},
        {"role": "assistant", "content": "Hello Ann."},
        {"role": "user", "content": "Who am I?"},
    ]


@pytest.mark.parametrize("streamed", [False, True])
async def test_function_tool_loop(make_proxy, mock, streamed):
    proxy = make_proxy(redis=True)
    arguments = json.dumps({"city": "Oslo"})
    mock.script(
        [
            {"tool_calls": [{"name": "get_weather", "arguments": arguments}], "chunks": 3},
            {"reply": "It is sunny in Oslo.", "chunks": 3},
        ]
    )
    agent = agent_for(proxy, tools=[get_weather])
    if streamed:
        result = Runner.run_streamed(agent, "Weather in Oslo?")
        deltas = [
            e.data.delta
            async for e in result.stream_events()
            if e.type == "raw_response_event" and e.data.type == "response.output_text.delta"
        ]
        assert "".join(deltas) == "It is sunny in Oslo."
    else:
        result = await Runner.run(agent, "Weather in Oslo?")
    assert result.final_output == "It is sunny in Oslo."
    assert len(mock.requests) == 2
    assert mock.requests[0].body["tools"][0]["function"]["name"] == "get_weather"
    messages = mock.requests[1].body["messages"]
    call_id = messages[2]["tool_calls"][0]["id"]
    assert messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Oslo?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call_id, "content": "sunny in Oslo"},
    ]
