"""Streaming and non-streaming relay through a real proxy to the real mock upstream."""

from __future__ import annotations

import sys
from collections.abc import AsyncGenerator

import httpx
import openai
import orjson


def sse_payloads(text: str) -> list[str]:
    return [line[6:] for line in text.split("\n") if line.startswith("data: ")]


def test_stream_relays_content_and_preserves_every_field(make_proxy, mock):
    proxy = make_proxy()
    client = openai.OpenAI(base_url=proxy.base_url, api_key="unused")
    stream = client.chat.completions.create(
        model="gpt-test",
        messages=[{"role": "user", "content": "hello there"}],
        stream=True,
        stream_options={"include_usage": True},
        extra_body={
            "mock": {
                "reply": "Hi! How can I help?",
                "chunks": 4,
                "reasoning": "thinking",
                "extra_fields": {"vendor_field": {"a": 1}},
            }
        },
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hi! How can I help?"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert all(c.model == "gpt-test" and c.id == chunks[0].id for c in chunks)
    assert all(c.system_fingerprint for c in chunks)
    assert all(c.model_extra.get("vendor_field") == {"a": 1} for c in chunks)
    # Reasoning is never relayed: a voice engine would speak it (issue 17).
    assert not any(
        "reasoning_content" in (c.choices[0].delta.model_extra or {}) for c in chunks if c.choices
    )
    # The upstream saw the body as sent, with its own key, not the caller's.
    seen = mock.requests[-1]
    assert seen.body["stream_options"] == {"include_usage": True}
    assert seen.headers["Authorization"] == "Bearer upstream-secret"


def test_stream_events_are_byte_identical_and_done_is_last(make_proxy, mock):
    proxy = make_proxy()
    body = {
        "model": "m",
        "stream": True,
        "messages": [{"role": "user", "content": "hi"}],
        "mock": {"chunks": 3, "extra_fields": {"x": [1, 2]}},
    }
    direct = httpx.post(mock.base_url + "/chat/completions", json=body).text
    relayed = httpx.post(proxy.base_url + "/chat/completions", json=body)
    assert relayed.status_code == 200
    assert relayed.headers["content-type"].startswith("text/event-stream")
    direct_events, relayed_events = sse_payloads(direct), sse_payloads(relayed.text)
    assert relayed_events[-1] == "[DONE]" and relayed_events.count("[DONE]") == 1
    # ids and timestamps differ between the two calls; the shapes do not.
    strip = lambda e: {k: v for k, v in orjson.loads(e).items() if k not in ("id", "created")}  # noqa: E731
    assert [strip(e) for e in relayed_events[:-1]] == [strip(e) for e in direct_events[:-1]]


def test_non_streaming_and_the_path_without_v1(make_proxy, mock):
    proxy = make_proxy()
    reply = httpx.post(
        proxy.url + "/chat/completions",
        json={
            "model": "m",
            "messages": [{"role": "user", "content": "x"}],
            "mock": {"reply": "ok then"},
        },
    )
    assert reply.status_code == 200
    assert reply.json()["choices"][0]["message"]["content"] == "ok then"
    client = openai.OpenAI(base_url=proxy.base_url, api_key="unused")
    completion = client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "x"}],
        extra_body={"mock": {"reply": "fine"}},
    )
    assert completion.choices[0].message.content == "fine"
    assert completion.usage is not None


def test_tool_calls_stream_back_unchanged(make_proxy, mock):
    proxy = make_proxy()
    client = openai.OpenAI(base_url=proxy.base_url, api_key="unused")
    chunks = list(
        client.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "weather?"}],
            tools=[{"type": "function", "function": {"name": "weather", "parameters": {}}}],
            stream=True,
            extra_body={
                "mock": {"tool_calls": [{"name": "weather", "arguments": '{"city": "Paris"}'}]}
            },
        )
    )
    calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert calls[0].function.name == "weather"
    assert "".join(tc.function.arguments or "" for tc in calls) == '{"city": "Paris"}'
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_models_lists_the_upstream_and_echo(make_proxy):
    proxy = make_proxy()
    ids = {m.id for m in openai.OpenAI(base_url=proxy.base_url, api_key="x").models.list()}
    assert "echo" in ids and len(ids) > 1


def test_echo_model_answers_with_nothing_configured(make_proxy):
    proxy = make_proxy(upstream_base_url=None)
    client = openai.OpenAI(base_url=proxy.base_url, api_key="x")
    chunks = list(
        client.chat.completions.create(
            model="anything", messages=[{"role": "user", "content": "testing one two"}], stream=True
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "(echo model) You said: testing one two"
    assert chunks[0].model == "echo"


def test_a_streamed_reply_leaves_no_async_generator_to_the_loops_finaliser(make_proxy):
    """An async generator dropped unfinished is closed by the event loop's finaliser,
    which starts a task for it: a task per stream, for nothing. Every generator of a
    reply is closed by the relay itself, with and without a task's history."""
    proxy = make_proxy(redis=True)
    finalised: list[str] = []

    async def count_finalised() -> None:
        hooks = sys.get_asyncgen_hooks()  # the server loop's own, for its thread
        assert hooks.finalizer is not None

        def counting(agen: AsyncGenerator[object, None]) -> None:
            finalised.append(agen.__qualname__)
            hooks.finalizer(agen)

        sys.set_asyncgen_hooks(firstiter=hooks.firstiter, finalizer=counting)

    proxy.run(count_finalised)
    for task in (None, "task-finaliser"):
        headers = {"X-Task-Id": task} if task else {}
        for turn in range(3):
            body = {
                "model": "m",
                "stream": True,
                "messages": [{"role": "user", "content": f"turn {turn}"}],
                "mock": {"chunks": 4, "gap_ms": 5},  # events in reads of their own
            }
            response = httpx.post(proxy.base_url + "/chat/completions", json=body, headers=headers)
            assert response.status_code == 200 and response.text.endswith("data: [DONE]\n\n")
    assert finalised == []
