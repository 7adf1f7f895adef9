"""Responses API requests as chat-completions bodies (pure translation)."""

from __future__ import annotations

import pytest

from proxy.errors import InvalidRequest
from proxy.responses.ids import ResponseRef, parse_response_id
from proxy.responses.request import to_chat_request


def test_string_input_and_instructions():
    request = to_chat_request(
        {"model": "m", "input": "hi", "instructions": "Be brief.", "max_output_tokens": 50}
    )
    assert request.chat_body == {
        "model": "m",
        "stream": False,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hi"},
        ],
        "max_tokens": 50,
    }
    assert request.store and request.previous is None


def test_items_become_messages_with_tool_calls_joined_to_the_assistant():
    request = to_chat_request(
        {
            "model": "m",
            "stream": True,
            "input": [
                {"role": "user", "content": [{"type": "input_text", "text": "Weather?"}]},
                {"type": "message", "role": "assistant", "content": "Let me check."},
                {"type": "function_call", "call_id": "c1", "name": "w", "arguments": "{}"},
                {"type": "function_call", "call_id": "c2", "name": "w", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
                {
                    "type": "function_call_output",
                    "call_id": "c2",
                    "output": [{"type": "input_text", "text": "rain"}],
                },
            ],
            "tools": [{"type": "function", "name": "w", "parameters": {"type": "object"}}],
            "tool_choice": {"type": "function", "name": "w"},
        }
    )
    call = {"type": "function", "function": {"name": "w", "arguments": "{}"}}
    assert request.chat_body["messages"] == [
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "content": "Let me check.",
            "tool_calls": [{"id": "c1", **call}, {"id": "c2", **call}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "c2", "content": "rain"},
    ]
    assert request.chat_body["tools"] == [
        {"type": "function", "function": {"name": "w", "parameters": {"type": "object"}}}
    ]
    assert request.chat_body["tool_choice"] == {"type": "function", "function": {"name": "w"}}
    assert request.chat_body["stream_options"] == {"include_usage": True}


def test_images_by_url_and_json_schema_format():
    request = to_chat_request(
        {
            "model": "m",
            "input": [
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "What is this?"},
                        {"type": "input_image", "image_url": "https://x/y.png", "detail": "low"},
                    ],
                }
            ],
            "text": {"format": {"type": "json_schema", "name": "a", "schema": {}}},
        }
    )
    assert request.chat_body["messages"][0]["content"] == [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}},
    ]
    assert request.chat_body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "a", "schema": {}},
    }


def test_defaults_an_sdk_sends_unset_are_accepted():
    request = to_chat_request(
        {"model": "m", "input": "x", "background": False, "conversation": None, "include": []}
    )
    assert request.chat_body["messages"] == [{"role": "user", "content": "x"}]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "x"}, "model"),
        ({"model": "m"}, "input"),
        ({"model": "m", "input": "x", "prompt": {"id": "p"}}, "prompt"),
        ({"model": "m", "input": "x", "tools": [{"type": "file_search"}]}, "tools.0.type"),
        ({"model": "m", "input": "x", "tool_choice": {"type": "web_search"}}, "tool_choice"),
        ({"model": "m", "input": [{"type": "function_call", "name": "w"}]}, "input.0.call_id"),
        ({"model": "m", "input": "x", "reasoning": {"summary": "auto"}}, "reasoning.summary"),
        ({"model": "m", "input": "x", "max_output_tokens": 0}, "max_output_tokens"),
        ({"model": "m", "input": "x", "max_output_tokens": True}, "max_output_tokens"),
        ({"model": "m", "input": "x", "stream": "yes"}, "stream"),
        ({"model": "m", "input": "x", "store": 1}, "store"),
        ({"model": "m", "input": 5}, "input"),
        ({"model": "m", "input": [{"role": "tool", "content": "x"}]}, "input.0.role"),
        (
            {"model": "m", "input": [{"type": "function_call_output", "call_id": "c"}]},
            "input.0.output",
        ),
        ({"model": "m", "input": "x", "previous_response_id": "resp_abc"}, "previous_response_id"),
    ],
)
def test_refused_with_the_parameter_named(body, param):
    with pytest.raises(InvalidRequest) as caught:
        to_chat_request(body)
    assert caught.value.status == 400
    assert caught.value.param == param


def test_response_ids_round_trip_and_reject_forgeries():
    ref = ResponseRef("1400:task-1", "req-9")
    assert parse_response_id(ref.response_id) == ref
    for forged in ("resp_", "resp_!!!", "msg_x", "resp_" + "YQ", 42):
        with pytest.raises(InvalidRequest):
            parse_response_id(forged)
