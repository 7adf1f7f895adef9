"""The upstream misbehaves: refused, failing, silent, cut off, garbled.

Before the first byte: fallback to the next target, else a true status with an OpenAI
envelope. After it: ``data: {"error": ...}`` then ``data: [DONE]``, and the task's
history holds what the caller heard, marked interrupted.
"""

from __future__ import annotations

import time

import httpx
import orjson
import pytest

from proxy.settings import ModelRoute, UpstreamTarget
from tests.context.engine_calls import engine_headers
from tests.faults.helpers import (
    SYSTEM,
    assert_valid_history,
    chat_body,
    data_events,
    elapsed,
    live_messages,
    new_task,
    post_chat,
    spoken,
    stored_messages,
    user,
    wait_for,
)
from tests.servers import free_port


def assert_envelope(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "code", "param"}
    assert error["code"] == code
    assert "Traceback" not in response.text
    return error


def route(*targets: UpstreamTarget) -> dict[str, ModelRoute]:
    return {"voice": ModelRoute(targets=list(targets))}


@pytest.mark.parametrize("stream", [True, False])
def test_refused_connection_is_a_502_envelope_and_nothing_is_stored(stateful_proxy, mock, stream):
    dead = UpstreamTarget(base_url=f"http://127.0.0.1:{free_port()}/v1", connect_timeout=1.0)
    proxy = stateful_proxy(routes=route(dead))
    task = new_task()
    with elapsed() as took:
        response = post_chat(proxy, task, chat_body("hello", stream=stream))
    assert took[0] < 3.0
    assert_envelope(response, 502, "upstream_failure")
    assert mock.requests == []
    # Nothing reached the caller: no half turn in the history to confuse the next one.
    assert live_messages(proxy, task) == []
    # The next turn, with the upstream back (a second replica here), builds on it.
    replica = stateful_proxy()
    response = post_chat(replica, task, chat_body("again", reply="ok"))
    assert spoken(data_events(response.text)) == "ok"
    assert mock.requests[-1].body["messages"] == [SYSTEM, user("again")]


def test_refused_connection_falls_back_to_the_next_target(stateful_proxy, mock):
    dead = UpstreamTarget(base_url=f"http://127.0.0.1:{free_port()}/v1", connect_timeout=1.0)
    proxy = stateful_proxy(routes=route(dead, UpstreamTarget(base_url=mock.base_url)))
    task = new_task()
    response = post_chat(proxy, task, chat_body("hello", reply="Hi there."))
    assert response.status_code == 200
    assert spoken(data_events(response.text)) == "Hi there."
    assert data_events(response.text)[-1] == "[DONE]"
    assert len(mock.requests) == 1
    assert [(m["role"], m["content"]) for m in stored_messages(proxy, task)] == [
        ("user", "hello"),
        ("assistant", "Hi there."),
    ]


@pytest.mark.parametrize("stream", [True, False])
def test_5xx_and_429_fall_back_then_answer(stateful_proxy, mock, stream):
    proxy = stateful_proxy(
        routes=route(
            UpstreamTarget(base_url=mock.scenario_url(status=500), model="a"),
            UpstreamTarget(base_url=mock.scenario_url(status=429), model="b"),
            UpstreamTarget(base_url=mock.scenario_url(status=503), model="c"),
            UpstreamTarget(base_url=mock.base_url, model="d"),
        )
    )
    response = post_chat(proxy, new_task(), chat_body("hello", stream=stream, reply="Fine."))
    assert response.status_code == 200, response.text
    assert [r.body["model"] for r in mock.requests] == ["a", "b", "c", "d"]
    assert [r.outcome for r in mock.requests] == ["error_status"] * 3 + ["completed"]


@pytest.mark.parametrize(
    ("last", "status", "code"),
    [(503, 502, "upstream_failure"), (429, 429, "rate_limit_exceeded")],
)
@pytest.mark.parametrize("stream", [True, False])
def test_every_target_failing_ends_in_the_last_ones_envelope(
    stateful_proxy, mock, stream, last, status, code
):
    proxy = stateful_proxy(
        routes=route(
            UpstreamTarget(base_url=mock.scenario_url(status=500), model="a"),
            UpstreamTarget(base_url=mock.scenario_url(status=last), model="b"),
        )
    )
    task = new_task()
    response = post_chat(proxy, task, chat_body("hello", stream=stream))
    assert_envelope(response, status, code)
    assert [r.body["model"] for r in mock.requests] == ["a", "b"]
    if status == 429:
        assert response.headers.get("retry-after") == "1"


def test_an_upstream_that_never_sends_a_byte_is_a_504_and_is_hung_up_on(stateful_proxy, mock):
    target = UpstreamTarget(base_url=mock.scenario_url(hang=True), first_token_timeout=0.5)
    proxy = stateful_proxy(routes=route(target))
    task = new_task()
    with elapsed() as took:
        response = post_chat(proxy, task, chat_body("hello"), timeout=10)
    assert_envelope(response, 504, "upstream_timeout")
    assert 0.4 < took[0] < 3.0
    # The proxy closed its upstream connection rather than leaving it hanging.
    record = mock.wait_for_outcome(0, timeout=3)
    assert record.outcome == "client_closed"
    assert record.ended_at - record.started_at < 2.0
    # The gate is left once the response has ended, a moment after the caller has it.
    assert wait_for(lambda: proxy.state.concurrency.active == 0)


def test_a_silent_upstream_times_out_a_non_streaming_request_at_first_token_timeout(
    stateful_proxy, mock
):
    target = UpstreamTarget(
        base_url=mock.scenario_url(hang=True), first_token_timeout=0.5, total_timeout=6.0
    )
    proxy = stateful_proxy(routes=route(target, UpstreamTarget(base_url=mock.base_url)))
    with elapsed() as took:
        response = post_chat(proxy, new_task(), chat_body("hello", stream=False), timeout=10)
    assert response.status_code == 200, response.text  # fell back to the second target
    assert took[0] < 3.0


def test_a_hung_target_falls_back_within_its_first_token_timeout(stateful_proxy, mock):
    proxy = stateful_proxy(
        routes=route(
            UpstreamTarget(base_url=mock.scenario_url(hang=True), first_token_timeout=0.4),
            UpstreamTarget(base_url=mock.base_url),
        )
    )
    with elapsed() as took:
        response = post_chat(proxy, new_task(), chat_body("hello", reply="Back."))
    assert spoken(data_events(response.text)) == "Back."
    assert took[0] < 3.0
    assert mock.wait_for_outcome(0, timeout=3).outcome == "client_closed"


@pytest.mark.parametrize(
    ("behaviour", "fragment"),
    [({"fail_after_chunks": 4}, "broke"), ({"malformed_after_chunks": 4}, "not JSON")],
)
def test_a_stream_cut_mid_way_ends_with_an_error_event_and_the_heard_part_is_stored(
    stateful_proxy, mock, behaviour, fragment
):
    proxy = stateful_proxy()
    task = new_task()
    first = post_chat(proxy, task, chat_body("first", reply="One two three."))
    assert spoken(data_events(first.text)) == "One two three."
    response = post_chat(proxy, task, chat_body("second", chunks=8, **behaviour))
    assert response.status_code == 200
    events = data_events(response.text)
    assert events[-1] == "[DONE]"
    error = orjson.loads(events[-2])["error"]
    assert set(error) == {"message", "type", "code", "param"}
    assert fragment in error["message"], error
    heard = spoken(events[:-2])
    assert heard and heard.startswith("Reply to: second")
    assert len(mock.requests) == 2  # no retry once bytes were sent

    def stored_turn():
        messages = stored_messages(proxy, task)
        return messages if len(messages) >= 4 else None

    messages = wait_for(stored_turn, timeout=3)
    assert messages, "the interrupted turn was not stored"
    assert_valid_history(messages)
    assert [(m["role"], m["content"], m["interrupted"]) for m in messages] == [
        ("user", "first", False),
        ("assistant", "One two three.", False),
        ("user", "second", False),
        ("assistant", heard, True),
    ]
    # The next turn is built on exactly that.
    post_chat(proxy, task, chat_body("third", reply="ok"))
    assert mock.requests[-1].body["messages"] == [
        SYSTEM,
        user("first"),
        {"role": "assistant", "content": "One two three."},
        user("second"),
        {"role": "assistant", "content": heard},
        user("third"),
    ]


def test_a_failure_mid_way_through_a_non_streaming_reply_is_a_502(stateful_proxy, mock):
    proxy = stateful_proxy()
    task = new_task()
    started = time.monotonic()
    response = post_chat(proxy, task, chat_body("hello", stream=False, fail_after_chunks=2))
    assert time.monotonic() - started < 5
    assert_envelope(response, 502, "upstream_failure")
    malformed = post_chat(proxy, task, chat_body("hello", stream=False, malformed_after_chunks=1))
    assert_envelope(malformed, 502, "upstream_failure")


@pytest.mark.parametrize("stream", [True, False])
def test_a_retry_without_request_id_after_a_502_stores_the_user_turn_once(
    stateful_proxy, mock, stream
):
    """An agent framework's client (the same headers on every call, no request id) gets
    a 502 from a failing upstream and resends the same messages: the failed attempt
    stored nothing, the retry is answered and its user turn is stored once."""
    proxy = stateful_proxy()
    task = new_task()
    headers = engine_headers(task)
    del headers["X-Request-Id"]
    mock.script([{"reply": "Hello."}, {"status": 500}, {"reply": "Yes."}])
    url = proxy.base_url + "/chat/completions"

    def send(messages: list[dict]) -> httpx.Response:
        body = {"model": "voice", "stream": stream, "messages": [SYSTEM, *messages]}
        return httpx.post(url, json=body, headers=headers, timeout=10)

    hello = [user("hi"), {"role": "assistant", "content": "Hello."}]
    assert send(hello[:1]).status_code == 200
    asked = [*hello, user("are you there?")]
    assert_envelope(send(asked), 502, "upstream_failure")
    assert [(m["role"], m["content"]) for m in live_messages(proxy, task)] == [
        ("user", "hi"),
        ("assistant", "Hello."),
    ]
    retry = send(asked)  # the client's retry: the same messages, no request id
    assert retry.status_code == 200, retry.text
    if stream:
        assert spoken(data_events(retry.text)) == "Yes."
    else:
        assert retry.json()["choices"][0]["message"]["content"] == "Yes."
    assert [r.outcome for r in mock.requests] == ["completed", "error_status", "completed"]
    assert mock.requests[1].body["messages"] == [SYSTEM, *asked]
    assert mock.requests[2].body["messages"] == [SYSTEM, *asked]  # "are you there?" once
    assert [(m["role"], m["content"]) for m in live_messages(proxy, task)] == [
        ("user", "hi"),
        ("assistant", "Hello."),
        ("user", "are you there?"),
        ("assistant", "Yes."),
    ]
