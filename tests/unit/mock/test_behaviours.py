"""The mock's issue-17 behaviours, rendered (no server): what is sent, and when."""

from __future__ import annotations

import orjson

from proxy.dev.mock.behaviour import MockBehaviour, render_json, render_stream

BODY = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}


def deltas(plan) -> list[tuple[float, dict]]:
    out = []
    for pause, event in plan.events:
        payload = event[len(b"data: ") :].strip()
        if payload != b"[DONE]":
            out.append((pause, orjson.loads(payload)["choices"][0]["delta"]))
    return out


def test_role_first_sends_the_role_at_once_and_the_words_later() -> None:
    b = MockBehaviour(role_first=True, first_token_ms=3000, reply="Hi.", chunks=1)
    sent = deltas(render_stream(b, BODY, "chatcmpl-x", 0))
    assert sent[:2] == [
        (0.0, {"role": "assistant", "content": ""}),
        (3.0, {"role": "assistant", "content": "Hi."}),
    ]


def test_reasoning_then_a_pause_then_the_answer() -> None:
    b = MockBehaviour(reasoning="a b", reasoning_ms=2000, reply="Yes sir.", chunks=2)
    sent = deltas(render_stream(b, BODY, "chatcmpl-x", 0))
    assert [(p, d.get("reasoning_content"), d.get("content")) for p, d in sent[:3]] == [
        (0.0, "a", None),
        (0.0, " b", None),
        (2.0, None, "Yes"),
    ]


def test_think_tags_in_the_content() -> None:
    b = MockBehaviour(reasoning="hmm", think_tags=True, reply="Yes.", chunks=1)
    sent = deltas(render_stream(b, BODY, "chatcmpl-x", 0))
    assert "".join(d.get("content") or "" for _, d in sent) == "<think>hmm</think>\n\nYes."
    _, payload = render_json(b, {**BODY, "stream": False}, "chatcmpl-x", 0)
    assert orjson.loads(payload)["choices"][0]["message"]["content"] == "<think>hmm</think>\n\nYes."


def test_usage_reports_cached_tokens() -> None:
    body = {**BODY, "stream_options": {"include_usage": True}}
    plan = render_stream(MockBehaviour(), body, "chatcmpl-x", 0, cached=1)
    usage = orjson.loads(plan.events[-2][1][len(b"data: ") :])["usage"]
    assert usage["prompt_tokens_details"] == {"cached_tokens": 1}
