"""ReplyAccumulator: what the relay keeps of a streamed (or whole) upstream reply."""

from __future__ import annotations

from typing import Any

import orjson

from proxy.chat.reply import ReplyAccumulator
from proxy.context.history import StoredAnswer
from proxy.upstream.sse import DONE
from proxy.upstream.usage import UpstreamUsage


def event(**fields: Any) -> bytes:
    return orjson.dumps({"id": "chatcmpl-1", "model": "m-1", **fields})


def delta(index: int = 0, finish: str | None = None, **content: Any) -> bytes:
    return event(choices=[{"index": index, "delta": content, "finish_reason": finish}])


def test_text_is_accumulated_and_each_event_returns_what_it_adds() -> None:
    reply = ReplyAccumulator()
    added = [
        reply.feed(delta(role="assistant")),
        reply.feed(delta(content="Hel")),
        reply.feed(delta(content="lo.")),
        reply.feed(delta(finish="stop")),
        reply.feed(DONE),
    ]
    assert added == ["", "Hel", "lo.", "", ""]
    assert (reply.text, reply.finish_reason, reply.done, reply.error) == (
        "Hello.",
        "stop",
        True,
        None,
    )
    assert (reply.completion_id, reply.model) == ("chatcmpl-1", "m-1")
    assert reply.answer() == StoredAnswer("Hello.", "m-1", "stop", "chatcmpl-1")


def test_only_choice_zero_is_kept() -> None:
    reply = ReplyAccumulator()
    assert reply.feed(delta(index=1, content="other")) == ""
    assert reply.feed(delta(index=0, content="spoken")) == "spoken"
    assert reply.text == "spoken"


def test_streamed_tool_call_fragments_are_joined_per_index() -> None:
    reply = ReplyAccumulator()
    first = {"index": 0, "id": "call_a", "function": {"name": "get_", "arguments": '{"ci'}}
    reply.feed(delta(tool_calls=[first]))
    reply.feed(
        delta(tool_calls=[{"index": 0, "function": {"name": "weather", "arguments": 'ty"'}}])
    )
    reply.feed(delta(tool_calls=[{"index": 1, "id": "call_b", "function": {"name": "time"}}]))
    reply.feed(delta(tool_calls=[{"index": 0, "function": {"arguments": ': "Oslo"}'}}]))
    reply.feed(delta(finish="tool_calls"))
    message = reply.assistant_message("req-1")
    assert message.role == "assistant" and message.content is None
    assert message.request_id == "req-1"
    assert message.tool_calls == [
        {
            "id": "call_a",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
        },
        {"id": "call_b", "type": "function", "function": {"name": "time", "arguments": ""}},
    ]


def test_text_with_tool_calls_keeps_both() -> None:
    reply = ReplyAccumulator()
    reply.feed(delta(content="Let me check."))
    reply.feed(delta(tool_calls=[{"index": 0, "id": "c", "function": {"name": "f"}}]))
    message = reply.assistant_message(None)
    assert message.content == "Let me check." and len(message.tool_calls or []) == 1


def test_an_empty_reply_is_stored_as_empty_text() -> None:
    reply = ReplyAccumulator()
    reply.feed(DONE)
    assert reply.assistant_message(None).content == ""
    assert reply.answer() == StoredAnswer("", None, "stop", None)


def test_a_mid_stream_error_event_is_recorded_not_spoken() -> None:
    reply = ReplyAccumulator()
    reply.feed(delta(content="Part"))
    assert reply.feed(orjson.dumps({"error": {"message": "overloaded"}})) == ""
    assert reply.error is not None
    assert reply.error.message == "upstream failed mid-stream: overloaded"
    assert reply.text == "Part"


def test_an_event_that_is_not_json_is_an_error() -> None:
    reply = ReplyAccumulator()
    assert reply.feed(b"{not json") == ""
    assert reply.error is not None
    assert reply.error.message == "upstream sent an event that is not JSON"


def test_non_object_events_and_usage() -> None:
    reply = ReplyAccumulator()
    assert reply.feed(b"[1, 2]") == "" and reply.error is None
    reply.feed(event(choices=[], usage={"prompt_tokens": 3, "completion_tokens": 2}))
    assert reply.usage == UpstreamUsage(prompt_tokens=3, completion_tokens=2, cached_tokens=0)
    assert reply.usage_only


def test_a_whole_completion_reads_the_same() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    reply = ReplyAccumulator.from_completion(
        {
            "id": "chatcmpl-9",
            "model": "m-9",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "Hi.", "tool_calls": [call]},
                    "finish_reason": "tool_calls",
                }
            ],
            "usage": {"total_tokens": 7},
        }
    )
    assert (reply.text, reply.finish_reason, reply.tool_calls) == ("Hi.", "tool_calls", {0: call})
    assert (reply.completion_id, reply.model) == ("chatcmpl-9", "m-9")
    assert reply.usage == UpstreamUsage(prompt_tokens=0, completion_tokens=0, cached_tokens=0)
    assert ReplyAccumulator.from_completion({}).answer() == StoredAnswer("", None, "stop", None)
