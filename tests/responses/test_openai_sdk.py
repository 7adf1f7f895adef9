"""The Responses API with the official openai SDK as the client, through a real proxy
to the real mock upstream (chat completions), with the task history in real Redis."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from proxy.responses.ids import parse_response_id
from tests.gateway.test_metrics import scrape, value


def client_for(proxy) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.base_url, api_key="unused", max_retries=0)


def test_non_streaming_text_with_instructions(make_proxy, mock):
    proxy = make_proxy(redis=True)
    mock.script([{"reply": "Hi there, Ann.", "chunks": 3}])
    response = client_for(proxy).responses.create(
        model="gpt-test", instructions="Be brief.", input="Hello, I am Ann."
    )
    assert response.status == "completed"
    assert response.output_text == "Hi there, Ann."
    assert [item.type for item in response.output] == ["message"]
    assert response.usage is not None and response.usage.output_tokens > 0
    assert mock.requests[-1].body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello, I am Ann."},
    ]
    assert mock.requests[-1].body["stream"] is False
    assert parse_response_id(response.id).task_key.startswith("resp-")
    series = scrape(proxy)
    assert (
        value(series, "proxy_requests_total", route="/v1/responses", model="other", status="200")
        == 1
    )


def test_streaming_events_in_order(make_proxy, mock):
    proxy = make_proxy(redis=True)
    mock.script([{"reply": "One two three.", "chunks": 3}])
    events = list(client_for(proxy).responses.create(model="gpt-test", input="Count.", stream=True))
    kinds = [e.type for e in events]
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == "One two three."
    final = events[-1].response
    assert final.output_text == "One two three."
    assert final.id == events[0].response.id
    assert final.usage is not None and final.usage.input_tokens > 0


def test_stream_helper_collects_the_final_response(make_proxy, mock):
    proxy = make_proxy(redis=True)
    mock.script([{"reply": "Streamed whole.", "chunks": 2}])
    with client_for(proxy).responses.stream(model="gpt-test", input="Say it.") as stream:
        texts = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(texts) == "Streamed whole."
    assert final.output_text == "Streamed whole."


def test_previous_response_id_continues_the_task_history(make_proxy, mock):
    proxy = make_proxy(redis=True)
    client = client_for(proxy)
    mock.script([{"reply": "Nice to meet you, Ann."}, {"reply": "Your name is Ann."}])
    first = client.responses.create(model="gpt-test", instructions="Be kind.", input="I am Ann.")
    second = client.responses.create(
        model="gpt-test",
        instructions="Be kind.",
        input="What is my name?",
        previous_response_id=first.id,
        stream=True,
    )
    final = next(e for e in list(second) if e.type == "response.completed").response
    assert final.output_text == "Your name is Ann."
    assert mock.requests[-1].body["messages"] == [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "I am Ann."},
        {"role": "assistant", "content": "Nice to meet you, Ann."},
        {"role": "user", "content": "What is my name?"},
    ]
    # Both turns belong to one task; the second id names its own turn in it.
    assert parse_response_id(final.id).task_key == parse_response_id(first.id).task_key
    assert final.id != first.id


def test_an_older_response_cannot_be_continued(make_proxy, mock):
    proxy = make_proxy(redis=True)
    client = client_for(proxy)
    mock.script([{"reply": "A."}, {"reply": "B."}])
    first = client.responses.create(model="gpt-test", input="one")
    client.responses.create(model="gpt-test", input="two", previous_response_id=first.id)
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="gpt-test", input="three", previous_response_id=first.id)
    assert caught.value.body["code"] == "previous_response_not_latest"
    assert len(mock.requests) == 2


def test_unknown_previous_response_id_is_a_400(make_proxy, mock):
    proxy = make_proxy(redis=True)
    client = client_for(proxy)
    for bad in ("resp_nothing", "resp_" + "A" * 40):
        with pytest.raises(openai.BadRequestError) as caught:
            client.responses.create(model="gpt-test", input="x", previous_response_id=bad)
        assert caught.value.body["code"] == "previous_response_not_found"
    assert mock.requests == []


WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


def test_function_tool_round_trip_non_streaming(make_proxy, mock):
    proxy = make_proxy(redis=True)
    client = client_for(proxy)
    mock.script(
        [
            {"tool_calls": [{"name": "get_weather", "arguments": '{"city": "Paris"}'}]},
            {"reply": "It is sunny in Paris."},
        ]
    )
    first = client.responses.create(
        model="gpt-test", input="Weather in Paris?", tools=[WEATHER_TOOL]
    )
    assert [item.type for item in first.output] == ["function_call"]
    call = first.output[0]
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Paris"}
    assert mock.requests[-1].body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": WEATHER_TOOL["parameters"],
            },
        }
    ]
    second = client.responses.create(
        model="gpt-test",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}],
        tools=[WEATHER_TOOL],
    )
    assert second.output_text == "It is sunny in Paris."
    messages = mock.requests[-1].body["messages"]
    assert messages == [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call.call_id,
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "content": "sunny", "tool_call_id": call.call_id},
    ]


def test_function_tool_streaming_events(make_proxy, mock):
    proxy = make_proxy(redis=True)
    mock.script(
        [{"tool_calls": [{"name": "get_weather", "arguments": '{"city": "Rome"}'}], "chunks": 4}]
    )
    events = list(
        client_for(proxy).responses.create(
            model="gpt-test", input="Rome?", tools=[WEATHER_TOOL], stream=True
        )
    )
    kinds = [e.type for e in events]
    assert kinds[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    deltas = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
    assert "".join(deltas) == '{"city": "Rome"}'
    assert kinds[-3:] == [
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    assert done.arguments == '{"city": "Rome"}'
    final = events[-1].response
    assert [(i.type, i.name) for i in final.output] == [("function_call", "get_weather")]


def test_message_items_and_store_false(make_proxy, mock):
    proxy = make_proxy(redis=True)
    mock.script([{"reply": "Four."}])
    response = client_for(proxy).responses.create(
        model="gpt-test",
        store=False,
        input=[
            {"role": "developer", "content": "Answer with one word."},
            {"role": "user", "content": [{"type": "input_text", "text": "2+2?"}]},
        ],
    )
    assert response.output_text == "Four."
    assert mock.requests[-1].body["messages"] == [
        {"role": "developer", "content": "Answer with one word."},
        {"role": "user", "content": "2+2?"},
    ]
    with pytest.raises(openai.BadRequestError) as caught:  # nothing was stored to continue
        client_for(proxy).responses.create(
            model="gpt-test", input="again", previous_response_id=response.id
        )
    assert caught.value.body["code"] == "previous_response_not_found"


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"tools": [{"type": "web_search"}]}, "tools.0.type"),
        ({"background": True}, "background"),
        ({"conversation": "conv_1"}, "conversation"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input.0.id"),
        ({"input": [{"type": "reasoning", "summary": []}]}, "input.0.type"),
        ({"input": [{"role": "user", "content": [{"type": "input_file"}]}]}, "input.0.content.0"),
        ({"include": ["file_search_call.results"]}, "include"),
    ],
)
def test_outside_the_subset_is_a_clear_400(make_proxy, mock, extra, param):
    proxy = make_proxy()
    body = {"model": "gpt-test", "input": "hi", **extra}
    with pytest.raises(openai.BadRequestError) as caught:
        client_for(proxy).responses.create(**body)
    assert caught.value.status_code == 400
    assert caught.value.body["param"] == param
    assert caught.value.body["type"] == "invalid_request_error"
    assert mock.requests == []


ADMIN = "admin-token-for-tests-0123456789"


def task_history(proxy, task_key: str) -> list[dict]:
    response = httpx.get(
        f"{proxy.url}/admin/tasks/{task_key}", headers={"Authorization": f"Bearer {ADMIN}"}
    )
    assert response.status_code == 200, response.text
    return [
        {k: m[k] for k in ("role", "content", "interrupted") if m.get(k)}
        for m in response.json()["messages"]
    ]


def test_the_sdk_retries_a_stalled_turn_and_the_user_turn_is_stored_once(make_proxy, mock):
    """The SDK's own retry (no request id) resends the same input with the same
    previous_response_id after the timed-out attempt stored its user turn: it is answered
    as that turn, not refused as a branch, and the user turn is stored once."""
    proxy = make_proxy(redis=True, admin_token=ADMIN, upstream_first_token_timeout=10)
    mock.script(
        [
            {"reply": "Hello, Ann."},
            {"reply": "Too late.", "first_token_ms": 5000},  # the client gives up at 1.5 s
            {"reply": "Your name is Ann."},  # the SDK's retry
            {"reply": "Goodbye, Ann."},
        ]
    )
    client = openai.OpenAI(base_url=proxy.base_url, api_key="unused", max_retries=1, timeout=1.5)
    first = client.responses.create(model="gpt-test", input="I am Ann.")
    events = list(
        client.responses.create(
            model="gpt-test", input="What is my name?", previous_response_id=first.id, stream=True
        )
    )
    assert events[-1].type == "response.completed"
    second = events[-1].response
    assert second.output_text == "Your name is Ann."
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == (
        "Your name is Ann."
    )
    task_key = parse_response_id(first.id).task_key
    assert parse_response_id(second.id).task_key == task_key
    asked = [
        {"role": "user", "content": "I am Ann."},
        {"role": "assistant", "content": "Hello, Ann."},
        {"role": "user", "content": "What is my name?"},
    ]
    assert [(r.outcome, r.body["messages"]) for r in mock.requests] == [
        ("completed", asked[:1]),
        ("client_closed", asked),  # the timed-out attempt: the proxy hung up on it
        ("completed", asked),  # the retry: the user turn once
    ]
    assert task_history(proxy, task_key) == [
        *asked,
        {"role": "assistant", "content": "Your name is Ann."},
    ]
    # The retried response is the task's latest: the conversation goes on from it.
    third = client.responses.create(model="gpt-test", input="Bye.", previous_response_id=second.id)
    assert third.output_text == "Goodbye, Ann."
    assert len(mock.requests) == 4
    assert mock.requests[-1].body["messages"] == [
        *asked,
        {"role": "assistant", "content": "Your name is Ann."},
        {"role": "user", "content": "Bye."},
    ]


def test_a_queued_meta_info_waits_for_a_chat_reply(make_proxy, mock):
    """meta.info has no place in the Responses protocol: a Responses turn neither sends
    the operator's queued meta.info nor takes it from the queue (even with
    PROXY_META_INFO_EVENTS=always and the engine's headers); the task's next chat reply
    delivers it, once. The upstream's own meta.info in the Responses turn is dropped."""
    proxy = make_proxy(redis=True, admin_token=ADMIN, meta_info_events="always")
    mock.script(
        [
            {"reply": "Hi, Ann.", "chunks": 2, "meta_info": {"source": "upstream"}},
            {"reply": "Welcome back."},
        ]
    )
    queued = httpx.post(
        f"{proxy.url}/admin/tasks/room-7/metainfo",
        params={"app_id": "app-1"},  # before the task's first turn: named with its app
        json={"metainfo": {"card": "vip"}},
        headers={"Authorization": f"Bearer {ADMIN}"},
    )
    assert queued.status_code == 202, queued.text
    headers = {"X-Task-Id": "room-7", "X-Sdk-App-Id": "app-1"}
    client = openai.OpenAI(
        base_url=proxy.base_url, api_key="unused", max_retries=0, default_headers=headers
    )
    events = list(client.responses.create(model="gpt-test", input="Hello.", stream=True))
    assert [e.type for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert all(type(e).__name__.startswith("Response") for e in events)  # typed by the SDK
    assert events[-1].response.output_text == "Hi, Ann."
    assert parse_response_id(events[-1].response.id).task_key == "app-1:room-7"

    chunks = list(
        client.chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": "Again."}], stream=True
        )
    )
    metas = [(c.model_extra or {}).get("metainfo") for c in chunks if not c.choices]
    assert metas == [{"card": "vip"}]  # the operator's, once; the upstream's went nowhere
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
        "Welcome back."
    )
    assert task_history(proxy, "app-1:room-7") == [
        {"role": "user", "content": "Hello."},
        {"role": "assistant", "content": "Hi, Ann."},
        {"role": "user", "content": "Again."},
        {"role": "assistant", "content": "Welcome back."},
    ]
    assert len(mock.requests) == 2
