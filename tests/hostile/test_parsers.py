"""Property-based tests of the parsers that see hostile input first.

Each parser has one contract: on any input it returns its value or raises its own
documented error, never anything else (an ``AttributeError`` here is a 500 there).
"""

from __future__ import annotations

import re
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from proxy.call import CallContext
from proxy.chat.request import parse_body
from proxy.context.matching import normalise
from proxy.errors import InvalidRequest
from proxy.upstream.sse import SSEDecoder
from proxy.voice.events import MAX_EVENT_MS, EngineEvent, MalformedEvent, parse_event

SETTINGS = settings(
    max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)

# JSON values as orjson produces them (no NaN / infinity: JSON has none).
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)

# Bodies that look like chat requests, with any field of any type.
ROLES = ["system", "developer", "user", "assistant", "tool", "function"]
message_like = st.fixed_dictionaries(
    {},
    optional={
        "role": st.sampled_from(ROLES) | json_values,
        "content": st.text(max_size=20) | json_values,
        "name": st.text(max_size=8) | json_values,
        "tool_calls": json_values,
        "tool_call_id": st.text(max_size=8) | json_values,
    },
)
chat_like = st.fixed_dictionaries(
    {},
    optional={
        "model": st.text(max_size=10) | json_values,
        "messages": st.lists(message_like | json_values, max_size=4) | json_values,
        "stream": st.booleans() | json_values,
        "stream_options": json_values,
        "max_tokens": json_values,
        "n": json_values,
        "tools": json_values,
        "temperature": json_values,
    },
)


def _parse(raw: bytes) -> dict[str, Any] | None:
    try:
        body = parse_body(raw)
    except InvalidRequest as exc:
        assert exc.status == 400
        assert set(exc.envelope()["error"]) == {"message", "type", "code", "param"}
        return None
    assert isinstance(body, dict)
    return body


# parse_body


@SETTINGS
@given(st.binary(max_size=200))
@example(b"\xff\xfe\x00")
@example(b"[" * 100_000)
@example(b'{"model": "m", "messages": [{"role": "user", "content": "\xed\xa0\x80"}]}')
def test_parse_body_on_arbitrary_bytes(raw: bytes) -> None:
    _parse(raw)


@SETTINGS
@given(json_values | chat_like)
@example({"model": "m", "messages": [{"role": []}]})
@example({"model": "m", "messages": [{"role": {"a": 1}}]})
@example({"model": "m", "messages": [{"role": "assistant", "tool_calls": [{"function": "x"}]}]})
def test_parse_body_on_arbitrary_json(value: Any) -> None:
    body = _parse(orjson.dumps(value))
    if body is None:
        return
    # What the proxy relies on downstream holds for every accepted body.
    assert isinstance(body["model"], str) and body["model"]
    assert isinstance(body.get("stream", False), bool)
    assert isinstance(body["messages"], list) and body["messages"]
    for message in body["messages"]:
        assert isinstance(message, dict)
        assert message["role"] in ROLES
        assert message.get("content") is None or isinstance(message["content"], str | list)
        assert message.get("name") is None or isinstance(message["name"], str)
        assert message.get("tool_call_id") is None or isinstance(message["tool_call_id"], str)
        calls = message.get("tool_calls")
        assert calls is None or isinstance(calls, list)
        assert all(isinstance(call, dict) for call in calls or ())
        for call in calls or ():
            assert call.get("function") is None or isinstance(call["function"], dict)


def test_parse_body_deep_nesting_is_invalid_request() -> None:
    nested = b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "x": '
    nested += b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(InvalidRequest):
        parse_body(nested)


# SSEDecoder


def _sse_event(lines: list[str]) -> bytes:
    return b"".join(b"data: " + line.encode() + b"\r\n" for line in lines) + b"\r\n"


sse_line = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=12
)
sse_streams = st.lists(st.lists(sse_line, min_size=1, max_size=3), min_size=1, max_size=6)
newline = st.sampled_from([b"\n", b"\r\n", b"\r"])


def _decode(chunks: list[bytes]) -> list[bytes]:
    decoder = SSEDecoder()
    events: list[bytes] = []
    for chunk in chunks:
        events.extend(decoder.feed(chunk))
    events.extend(decoder.flush())
    return events


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(cut, len(data)) for cut in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@SETTINGS
@given(sse_streams, newline, st.lists(st.integers(min_value=0, max_value=400), max_size=20))
@example([["a", "b"]], b"\r\n", [8])  # a CRLF split between two chunks
def test_sse_any_chunking_yields_the_same_events(
    events: list[list[str]], eol: bytes, cuts: list[int]
) -> None:
    stream = b"".join(
        b"".join(b"data: " + line.encode() + eol for line in lines) + b": keep-alive" + eol + eol
        for lines in events
    )
    expected = [b"\n".join(line.encode() for line in lines) for lines in events]
    assert _decode([stream]) == expected
    assert _decode(_split(stream, cuts)) == expected
    assert _decode([bytes([byte]) for byte in stream]) == expected


@SETTINGS
@given(st.lists(st.binary(max_size=64), max_size=10))
def test_sse_arbitrary_bytes_never_raise(chunks: list[bytes]) -> None:
    events = _decode(chunks)
    assert all(isinstance(event, bytes) for event in events)


# parse_event

event_like = st.fixed_dictionaries(
    {},
    optional={
        "EventType": st.integers(900, 910) | json_values | st.text(max_size=4),
        "EventInfo": st.fixed_dictionaries(
            {},
            optional={
                "TaskId": st.text(max_size=140) | json_values,
                "EventMsTs": st.integers(min_value=-(2**63), max_value=2**64 - 1) | json_values,
                "RoomId": json_values,
                "RoomIdType": json_values,
                "Payload": json_values,
            },
        )
        | json_values,
    },
)


@SETTINGS
@given(json_values | event_like)
@example({"EventType": 905, "EventInfo": {"TaskId": "t", "EventMsTs": "1" * 5000}})
@example({"EventType": 1e300, "EventInfo": {"TaskId": "t", "EventMsTs": 1}})
@example({"EventType": 906, "EventInfo": {"TaskId": "t", "EventMsTs": 1, "Payload": {"Tag": "x"}}})
@example({"EventType": 903, "EventInfo": {"TaskId": "t", "EventMsTs": 10**17}})
@example({"EventType": 2**40, "EventInfo": {"TaskId": "t", "EventMsTs": 1, "RoomId": "9" * 200}})
def test_parse_event_on_arbitrary_json(value: Any) -> None:
    value = orjson.loads(orjson.dumps(value))  # exactly what the endpoint would see
    try:
        event = parse_event(value)
    except MalformedEvent:
        return
    assert isinstance(event, EngineEvent)
    assert isinstance(event.event_type, int) and isinstance(event.event_ms_ts, int)
    assert isinstance(event.task_id, str) and 0 < len(event.task_id) <= 128
    assert 0 <= event.event_ms_ts <= MAX_EVENT_MS and 0 <= event.event_type < 2**31
    assert event.room_id is None or len(event.room_id) <= 128
    assert isinstance(event.payload, dict)
    # What the callback service reads later must not raise either.
    assert event.round_id is None or isinstance(event.round_id, str)
    assert isinstance(event.dedupe_key, str)


# CallContext.from_headers

SAFE = re.compile(r"[\x21-\x7e]{1,128}")
HEADERS = ["x-task-id", "x-request-id", "x-rquest-id", "x-sdk-app-id", "x-user-id", "x-room-id"]
hostile_value = (
    st.text(max_size=200)
    | st.text(st.characters(codec="latin-1"), max_size=200)  # what a server decodes
    | st.sampled_from(
        [
            "task\r\nX-Injected: 1",
            "task\nforged log line",
            "task\x00",
            "\x1b[31mred",
            "t" * 10_240,
            "t" * 128,
            "t" * 129,
            "任务",
            " task ",
            "task id",
            "",
        ]
    )
)


SCOPING = {"x-task-id", "x-request-id", "x-rquest-id", "x-sdk-app-id"}
ID = re.compile(r"[\x21-\x7e]{1,256}")
APP_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")


@SETTINGS
@given(st.dictionaries(st.sampled_from([*HEADERS, "x-room-id-type"]), hostile_value))
def test_call_context_keeps_only_safe_values_or_refuses(headers: dict[str, str]) -> None:
    try:
        call = CallContext.from_headers(headers)
    except InvalidRequest as exc:
        # Only a header that scopes state is refused (never silently dropped).
        assert exc.param in SCOPING and exc.status == 400
        value = headers[exc.param].strip()
        valid = APP_ID if exc.param == "x-sdk-app-id" else ID
        assert value and not valid.fullmatch(value)
        return
    for value in (call.task_id, call.request_id):
        assert value is None or ID.fullmatch(value), repr(value)
    for value in (call.app_id, call.user_id, call.room_id, call.room_id_type):
        assert value is None or SAFE.fullmatch(value), repr(value)
    assert all(ID.fullmatch(value) for value in call.log_fields().values())


@pytest.mark.parametrize(
    "value",
    ["a\r\nb", "a\nb", "a\rb", "a\x00b", "a\tb", "a b", "t" * 257, "t" * 10_240, "任务", "a\x7f"],
)
def test_call_context_refuses_unsafe_task_ids(value: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        CallContext.from_headers({"x-task-id": value})
    assert refused.value.param == "x-task-id"


@pytest.mark.parametrize("value", ["app/one", "a" * 65, "app:one", "app one"])
def test_call_context_refuses_invalid_app_ids(value: str) -> None:
    with pytest.raises(InvalidRequest):
        CallContext.from_headers({"x-task-id": "t", "x-sdk-app-id": value})


def test_call_context_accepts_task_ids_up_to_256_characters() -> None:
    assert CallContext.from_headers({"x-task-id": "t" * 256}).task_id == "t" * 256


# normalise


@SETTINGS
@given(st.text(max_size=50))
def test_normalise_never_raises(text: str) -> None:
    assert isinstance(normalise(text), str)


@SETTINGS
@given(st.text(max_size=50))
@example("a^\u0301")
def test_normalise_is_idempotent(text: str) -> None:
    once = normalise(text)
    assert normalise(once) == once
