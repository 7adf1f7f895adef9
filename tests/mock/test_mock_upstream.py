"""The mock upstream, driven by the official openai SDK and raw HTTP clients."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import orjson
import pytest
import pytest_asyncio

from proxy.dev.mock.behaviour import BehaviourError, MockBehaviour, default_reply, split_pieces
from proxy.dev.mock.upstream import MockUpstream, MockUpstreamThread

MESSAGES: Any = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "what is the weather in Paris"},
]


@pytest_asyncio.fixture(scope="module")
async def server() -> AsyncIterator[MockUpstream]:
    async with MockUpstream() as upstream:
        yield upstream


@pytest.fixture(autouse=True)
def fresh(server: MockUpstream) -> None:
    server.clear()


def sdk(base_url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=base_url, api_key="x", max_retries=0)


async def stream_chunks(base_url: str, **kwargs: Any) -> list[Any]:
    stream = await sdk(base_url).chat.completions.create(
        model="m", messages=MESSAGES, stream=True, **kwargs
    )
    return [chunk async for chunk in stream]


def content_of(chunks: list[Any]) -> list[str]:
    return [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]


async def raw_events(url: str, body: dict[str, Any]) -> list[str]:
    async with aiohttp.ClientSession() as session, session.post(url, json=body) as response:
        text = await response.text()
    return [line.removeprefix("data: ") for line in text.split("\n\n") if line]


async def test_stream_has_the_standard_shape_and_rejoins_to_the_reply(server: MockUpstream) -> None:
    chunks = await stream_chunks(server.base_url)
    pieces = content_of(chunks)
    assert len(pieces) == 20
    assert "".join(pieces) == default_reply(MESSAGES, 20)
    assert "".join(pieces).startswith("Reply to: what is the weather in Paris")
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.finish_reason is None for chunk in chunks[:-1] for c in chunk.choices)
    assert {(c.id, c.object, c.model, c.system_fingerprint) for c in chunks} == {
        (chunks[0].id, "chat.completion.chunk", "m", "fp_mock")
    }


async def test_usage_chunk_only_when_asked_for(server: MockUpstream) -> None:
    without = await stream_chunks(server.base_url)
    assert all(c.usage is None for c in without)
    chunks = await stream_chunks(server.base_url, stream_options={"include_usage": True})
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 20
    usage = chunks[-1].usage
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


async def test_non_streaming_matches_the_stream(server: MockUpstream) -> None:
    completion = await sdk(server.base_url).chat.completions.create(model="m", messages=MESSAGES)
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == default_reply(MESSAGES, 20)
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens == 20


async def test_models_list(server: MockUpstream) -> None:
    models = await sdk(server.base_url).models.list()
    assert [m.id for m in models.data] == ["mock-model"]


async def test_scenario_path_then_body_overrides(server: MockUpstream) -> None:
    url = server.scenario_url(chunks=5, reply="one two three four five six")
    assert url.endswith("/s/chunks=5,reply=one%20two%20three%20four%20five%20six/v1")
    pieces = content_of(await stream_chunks(url))
    assert pieces == ["one", " two", " three", " four", " five six"]
    # The request body's mock object wins over the path.
    pieces = content_of(await stream_chunks(url, extra_body={"mock": {"chunks": 3}}))
    assert len(pieces) == 3 and "".join(pieces) == "one two three four five six"
    assert server.requests[0].scenario == {"chunks": "5", "reply": "one two three four five six"}


async def test_any_prefix_before_v1_is_accepted(server: MockUpstream) -> None:
    chunks = await stream_chunks(server.url + "/some/gateway/s/chunks=2/v1")
    assert len(content_of(chunks)) == 2


@pytest.mark.parametrize(
    ("status", "error", "code"),
    [
        (400, openai.BadRequestError, None),
        (401, openai.AuthenticationError, "invalid_api_key"),
        (404, openai.NotFoundError, "model_not_found"),
        (429, openai.RateLimitError, "rate_limit_exceeded"),
        (500, openai.InternalServerError, None),
        (503, openai.InternalServerError, "service_unavailable"),
    ],
)
async def test_error_statuses_raise_the_sdk_exceptions(
    server: MockUpstream, status: int, error: type[openai.APIStatusError], code: str | None
) -> None:
    with pytest.raises(error) as caught:
        await stream_chunks(server.scenario_url(status=status))
    assert caught.value.status_code == status
    assert caught.value.code == code
    assert (
        isinstance(caught.value.body, dict)
        and {"message", "type", "param"} <= caught.value.body.keys()
    )
    if status == 429:
        assert caught.value.response.headers["retry-after"] == "1"
    assert (await server.wait_for_outcome(0)).outcome == "error_status"


async def test_unknown_keys_are_rejected(server: MockUpstream) -> None:
    with pytest.raises(openai.BadRequestError, match="unknown mock behaviour key"):
        await stream_chunks(server.base_url, extra_body={"mock": {"chunk": 3}})
    with pytest.raises(BehaviourError):
        server.scenario_url(chunks="many")


async def test_fail_after_chunks_breaks_the_stream(server: MockUpstream) -> None:
    received: list[Any] = []
    stream = await sdk(server.base_url).chat.completions.create(
        model="m", messages=MESSAGES, stream=True, extra_body={"mock": {"fail_after_chunks": 3}}
    )
    with pytest.raises(openai.APIConnectionError):
        async for chunk in stream:
            received.append(chunk)
    assert len(content_of(received)) == 3
    assert (await server.wait_for_outcome(0)).outcome == "failed_mid_stream"


async def test_malformed_line_after_chunks(server: MockUpstream) -> None:
    body = {
        "messages": MESSAGES,
        "stream": True,
        "mock": {"chunks": 4, "malformed_after_chunks": 2},
    }
    events = await raw_events(server.base_url + "/chat/completions", body)
    assert events[2] == "{not json"
    assert len(events) == 4 + 1 + 1 + 1  # chunks, the bad line, the final chunk, [DONE]
    assert events[-1] == "[DONE]"


async def test_tool_calls_stream_in_the_openai_shape(server: MockUpstream) -> None:
    calls = [{"name": "get_weather", "arguments": {"city": "Paris"}}, {"name": "hang_up"}]
    client = sdk(server.base_url)
    async with client.chat.completions.stream(
        model="m", messages=MESSAGES, extra_body={"mock": {"tool_calls": calls}}
    ) as stream:
        chunks = [event.chunk async for event in stream if event.type == "chunk"]
        final = await stream.get_final_completion()
    message = final.choices[0].message
    assert final.choices[0].finish_reason == "tool_calls"
    assert [(t.function.name, t.function.arguments) for t in message.tool_calls or []] == [
        ("get_weather", '{"city":"Paris"}'),
        ("hang_up", "{}"),
    ]
    opening = chunks[0].choices[0].delta.tool_calls[0]
    assert (opening.index, opening.type, opening.function.arguments) == (0, "function", "")
    assert opening.id and opening.function.name == "get_weather"
    fragment = chunks[1].choices[0].delta.tool_calls[0]
    assert fragment.id is None and fragment.function.name is None and fragment.function.arguments


async def test_tool_calls_without_streaming(server: MockUpstream) -> None:
    completion = await sdk(server.base_url).chat.completions.create(
        model="m", messages=MESSAGES, extra_body={"mock": {"tool_calls": [{"name": "f"}]}}
    )
    assert completion.choices[0].message.content is None
    (call,) = completion.choices[0].message.tool_calls or []
    assert call.type == "function" and call.function.name == "f"


async def test_reasoning_extra_fields_and_meta_info(server: MockUpstream) -> None:
    mock = {"reasoning": "let me think", "extra_fields": {"vendor": [1]}, "meta_info": {"q": 7}}
    events = await raw_events(
        server.base_url + "/chat/completions",
        {"messages": MESSAGES, "stream": True, "mock": {**mock, "chunks": 2}},
    )
    meta = orjson.loads(events[0])
    assert meta["type"] == "meta.info" and meta["metainfo"] == {"q": 7}
    chunks = [orjson.loads(e) for e in events[1:-1]]
    assert all(c["vendor"] == [1] for c in chunks)
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert [d.get("reasoning_content") for d in deltas[:2]] == ["let", " me think"]
    assert "".join(d.get("content") or "" for d in deltas[2:]) == default_reply(MESSAGES, 2)


async def test_scripted_behaviours_are_used_in_order(server: MockUpstream) -> None:
    server.script([{"tool_calls": [{"name": "lookup"}]}, MockBehaviour(reply="Done.", chunks=2)])
    client = sdk(server.base_url)
    first = await client.chat.completions.create(model="m", messages=MESSAGES)
    second = await client.chat.completions.create(model="m", messages=MESSAGES)
    third = await client.chat.completions.create(model="m", messages=MESSAGES)
    assert first.choices[0].finish_reason == "tool_calls"
    assert second.choices[0].message.content == "Done."
    assert third.choices[0].message.content == default_reply(MESSAGES, 20)


async def test_script_and_records_over_http(server: MockUpstream) -> None:
    async with aiohttp.ClientSession(server.url) as session:
        async with session.post("/_mock/script", json={"behaviours": [{"status": 500}]}) as r:
            assert r.status == 200 and (await r.json())["queued"] == 1
        async with session.delete("/_mock/script"):
            pass
        body = {"model": "m", "messages": MESSAGES, "mock": {"chunks": 1}}
        async with session.post("/s/gap_ms=1/v1/chat/completions", json=body) as r:
            assert r.status == 200
        async with session.get("/_mock/requests") as r:
            (seen,) = await r.json()
        async with session.delete("/_mock/requests"):
            pass
    assert seen["path"] == "/s/gap_ms=1/v1/chat/completions"
    assert seen["scenario"] == {"gap_ms": "1"} and seen["body"] == body
    assert seen["outcome"] == "completed" and seen["ended_at"] >= seen["started_at"]
    assert seen["headers"]["Content-Type"] == "application/json"
    assert server.requests == []


async def test_recorded_headers_ignore_case(server: MockUpstream) -> None:
    await stream_chunks(server.base_url)
    headers = server.requests[0].headers
    assert headers["authorization"] == headers["Authorization"] == "Bearer x"
    assert "AUTHORIZATION" in headers


async def test_client_disconnect_mid_stream_is_recorded(server: MockUpstream) -> None:
    body = {"messages": MESSAGES, "stream": True, "mock": {"chunks": 50, "gap_ms": 200}}
    async with aiohttp.ClientSession() as session:
        response = await session.post(server.base_url + "/chat/completions", json=body)
        assert (await response.content.readline()).startswith(b"data: ")
        response.close()
        left_at = time.monotonic()
    record = await server.wait_for_outcome(0, timeout=5)
    assert record.outcome == "client_closed"
    assert record.ended_at is not None and record.ended_at - left_at < 1.0


async def test_client_giving_up_on_a_hang_is_recorded(server: MockUpstream) -> None:
    url = server.scenario_url(hang=True)
    with pytest.raises(openai.APITimeoutError):
        await (
            sdk(url).with_options(timeout=0.2).chat.completions.create(model="m", messages=MESSAGES)
        )
    assert (await server.wait_for_outcome(0, timeout=5)).outcome == "client_closed"


async def test_first_token_delay_is_a_lower_bound(server: MockUpstream) -> None:
    started = time.monotonic()
    stream = await sdk(server.scenario_url(first_token_ms=150)).chat.completions.create(
        model="m", messages=MESSAGES, stream=True
    )
    async for _ in stream:
        break
    assert time.monotonic() - started >= 0.14
    await stream.close()


async def test_record_false_records_nothing() -> None:
    async with MockUpstream(record=False, defaults=MockBehaviour(chunks=2)) as quiet:
        assert len(content_of(await stream_chunks(quiet.base_url))) == 2
        assert quiet.requests == []


def test_thread_runner_serves_sync_clients() -> None:
    with MockUpstreamThread(defaults=MockBehaviour(chunks=4)) as mock:
        mock.script([{"reply": "scripted"}])
        client = openai.OpenAI(base_url=mock.base_url, api_key="x", max_retries=0)
        first = client.chat.completions.create(model="m", messages=MESSAGES)
        stream = client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
        assert len(content_of(list(stream))) == 4
        assert first.choices[0].message.content == "scripted"
        assert mock.wait_for_outcome(1).outcome == "completed"
        assert [r.body.get("stream", False) for r in mock.requests] == [False, True]
        mock.clear()
        assert mock.requests == []


@pytest.mark.parametrize(("text", "count"), [("a b c", 5), ("hello world ", 2), ("", 3), ("xy", 0)])
def test_split_pieces_rejoin_exactly(text: str, count: int) -> None:
    pieces = split_pieces(text, count)
    assert "".join(pieces) == (text if count else "")
    assert len(pieces) == min(count, len(text) if len(text.split()) < count else count)
    assert all(pieces)


def test_default_reply_has_enough_words() -> None:
    reply = default_reply([{"role": "user", "content": [{"type": "text", "text": "hi"}]}], 12)
    assert reply.startswith("Reply to: hi ") and len(reply.split()) == 12


async def test_cli_runs_until_sigterm() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy.dev.mock.upstream",
        "--port", "0", "--chunks", "2", "--no-record",
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    assert process.stdout is not None
    line = (await asyncio.wait_for(process.stdout.readline(), 20)).decode()
    base_url = line.rsplit(" ", 1)[-1].strip()
    assert len(content_of(await stream_chunks(base_url))) == 2
    process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(process.wait(), 10) == 0
