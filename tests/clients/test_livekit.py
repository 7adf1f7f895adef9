"""LiveKit Agents' OpenAI plugin (livekit-plugins-openai): its LLM stream, driven directly
(no room), as a client of a real proxy."""

from __future__ import annotations

import pytest
from livekit.agents import APIConnectOptions, llm
from livekit.plugins import openai as livekit_openai

from tests.clients import scenario as s

pytestmark = pytest.mark.slow  # a real proxy process and a client library: 10-40 s

# One retry after the scenario's timeout, quickly.
RETRY_ONCE = APIConnectOptions(max_retry=1, retry_interval=0.1, timeout=s.CLIENT_TIMEOUT_S)


@llm.function_tool
async def get_weather(city: str) -> str:
    """The weather in a city."""
    return s.TOOL_RESULT


async def _collect(model: livekit_openai.LLM, ctx: llm.ChatContext, **kwargs) -> tuple[str, list]:
    text, calls = [], []
    async with model.chat(chat_ctx=ctx, conn_options=RETRY_ONCE, **kwargs) as stream:
        async for chunk in stream:
            if chunk.delta is None:
                continue
            text.append(chunk.delta.content or "")
            calls.extend(chunk.delta.tool_calls or ())
    return "".join(text), calls


async def test_livekit_streams_uses_tools_retries_and_keeps_history(client_proxy, mock, task_id):
    s.script(mock)
    s.queue_meta(client_proxy.url, task_id)
    model = livekit_openai.LLM(
        model=s.MODEL,
        base_url=client_proxy.url + "/v1",
        api_key=s.API_KEY,
        extra_headers={"X-Task-Id": task_id},
    )
    ctx = llm.ChatContext.empty()
    ctx.add_message(role="user", content=s.HELLO)

    # 1. A stream with meta.info events in it (once: "'NoneType' object is not iterable").
    text, _ = await _collect(model, ctx)
    assert text == s.HI
    ctx.add_message(role="assistant", content=s.HI)

    # 2. The client's tool (LiveKit always sends its tools with the request).
    ctx.add_message(role="user", content=s.ASK)
    text, calls = await _collect(model, ctx, tools=[get_weather])
    assert text == ""
    assert [(c.call_id, c.name, c.arguments) for c in calls] == [
        (s.CALL_ID, "get_weather", '{"city":"Paris"}')
    ]
    ctx.items.append(
        llm.FunctionCall(call_id=s.CALL_ID, name="get_weather", arguments=calls[0].arguments)
    )
    ctx.items.append(
        llm.FunctionCallOutput(
            call_id=s.CALL_ID, name="get_weather", output=s.TOOL_RESULT, is_error=False
        )
    )
    text, _ = await _collect(model, ctx, tools=[get_weather])
    assert text == s.SUNNY
    ctx.add_message(role="assistant", content=s.SUNNY)

    # 3. A slow upstream: the plugin times out after 2 s and retries once.
    ctx.add_message(role="user", content=s.THANKS)
    text, _ = await _collect(model, ctx)
    assert text == s.WELCOME
    await model.aclose()

    s.check_upstream(mock)
    s.check_stored(client_proxy.url, task_id)
