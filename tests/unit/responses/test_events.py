"""Chat chunk events into Responses API stream events (pure)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from proxy.chat.chunks import ChunkEvent, ToolCallDelta
from proxy.errors import UpstreamError
from proxy.responses.events import ResponseEventStream, ResponseShell
from proxy.responses.ids import ResponseRef

SHELL_ID = ResponseRef("task", "req").response_id


async def events_of(chunks: list[ChunkEvent], fail: bool = False) -> list[dict]:
    async def source() -> AsyncIterator[ChunkEvent]:
        for chunk in chunks:
            yield chunk
        if fail:
            raise UpstreamError("boom")

    stream = ResponseEventStream(ResponseShell(SHELL_ID, "m", {}))
    raw = b"".join([frame async for frame in stream.frames(source())])
    return [json.loads(line[6:]) for line in raw.decode().split("\n") if line.startswith("data: ")]


async def test_text_then_a_tool_call_are_two_items_in_order():
    events = await events_of(
        [
            ChunkEvent(text="Let me check. "),
            ChunkEvent(tool_calls=[ToolCallDelta(0, "c1", "w", "")]),
            ChunkEvent(tool_calls=[ToolCallDelta(0, None, "", '{"a":')]),
            ChunkEvent(tool_calls=[ToolCallDelta(0, None, "", "1}")]),
            ChunkEvent(
                finish_reason="tool_calls", usage={"prompt_tokens": 3, "completion_tokens": 2}
            ),
        ]
    )
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    final = events[-1]["response"]
    assert [(i["type"], i["id"].split("_")[0]) for i in final["output"]] == [
        ("message", "msg"),
        ("function_call", "fc"),
    ]
    assert final["output"][0]["id"].startswith("msg_" + SHELL_ID[len("resp_") :] + ".")
    assert final["output"][1]["arguments"] == '{"a":1}'
    assert final["usage"]["total_tokens"] == 5


async def test_length_finish_is_incomplete_and_failure_is_failed():
    events = await events_of([ChunkEvent(text="cut"), ChunkEvent(finish_reason="length")])
    assert events[-1]["type"] == "response.incomplete"
    assert events[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    failed = await events_of([ChunkEvent(text="par")], fail=True)
    assert failed[-1]["type"] == "response.failed"
    assert failed[-1]["response"]["error"]["message"] == "boom"
