"""The first speakable token and reasoning removal, event by event."""

from __future__ import annotations

import orjson

from proxy.upstream.speakable import SpeakableFilter, strip_reasoning_from_completion


def chunk(delta: dict, finish: str | None = None) -> bytes:
    return orjson.dumps(
        {"id": "c", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    )


def run(events: list[bytes]) -> tuple[list[bytes | None], list[bool]]:
    speakable = SpeakableFilter()
    out, decisive = [], []
    for event in events:
        out.append(speakable.feed(event))
        decisive.append(speakable.decisive)
    return out, decisive


def test_a_role_only_chunk_and_empty_content_are_not_speakable() -> None:
    events = [
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": " "}),
        chunk({"content": "Hi"}),
    ]
    out, decisive = run(events)
    assert out == events  # relayed unchanged
    assert decisive == [False, False, True]


def test_reasoning_content_is_removed_and_not_speakable() -> None:
    events = [
        chunk({"role": "assistant", "content": None, "reasoning_content": "Let me think"}),
        chunk({"content": None, "reasoning_content": " more"}),
        chunk({"content": "Sure."}),
    ]
    speakable = SpeakableFilter()
    first = speakable.feed(events[0])
    assert first is not None and orjson.loads(first)["choices"][0]["delta"] == {
        "role": "assistant",
        "content": None,
    }
    assert speakable.feed(events[1]) is None  # only reasoning: dropped
    assert not speakable.decisive
    assert speakable.feed(events[2]) == events[2]
    assert speakable.decisive
    assert speakable.reasoning_text == "Let me think more"


def test_think_tags_are_removed_across_chunks() -> None:
    events = [
        chunk({"role": "assistant", "content": "<think>"}),
        chunk({"content": "The user wants"}),
        chunk({"content": " a number.</think>\n\n"}),
        chunk({"content": "Forty-two."}),
        chunk({"content": " Then <think>again</think>done."}),
    ]
    out, decisive = run(events)
    texts = [
        orjson.loads(e)["choices"][0]["delta"].get("content") if e is not None else None
        for e in out
    ]
    assert texts == ["", None, None, "Forty-two.", " Then done."]
    assert decisive == [False, False, False, True, True]


def test_a_tool_call_finish_error_or_done_is_decisive() -> None:
    call = chunk(
        {"tool_calls": [{"index": 0, "id": "x", "function": {"name": "f", "arguments": ""}}]}
    )
    for event in (
        call,
        chunk({}, "stop"),
        orjson.dumps({"error": {"message": "boom"}}),
        b"[DONE]",
    ):
        speakable = SpeakableFilter()
        assert speakable.feed(event) == event
        assert speakable.decisive


def test_reasoning_kept_for_a_profile_is_bounded() -> None:
    speakable = SpeakableFilter()
    for _ in range(100):
        speakable.feed(chunk({"reasoning_content": "x" * 1024}))
    assert len(speakable.reasoning_text) == 64 * 1024


def test_a_non_streaming_completion_loses_its_reasoning() -> None:
    response = {
        "choices": [
            {
                "message": {
                    "role": "assistant",
                    "content": "<think>hm</think>\n\nYes.",
                    "reasoning_content": "r",
                }
            }
        ]
    }
    removed = strip_reasoning_from_completion(response)
    assert response["choices"][0]["message"] == {"role": "assistant", "content": "Yes."}
    assert removed == "rhm"
