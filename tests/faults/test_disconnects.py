"""The caller hangs up at every stage of a request.

Each case: the upstream (or tool) connection is closed promptly, the proxy's
bookkeeping is released, and the task's history stays a valid sequence (each user
turn once, no orphan tool messages) that the next turn builds on.
"""

from __future__ import annotations

import contextlib
import time

import httpx
import pytest

from proxy.settings import KeySpec, ProfileSpec
from tests.context.engine_calls import engine_headers
from tests.faults.helpers import (
    ADMIN_HEADERS,
    SYSTEM,
    RawStream,
    assert_valid_history,
    chat_body,
    data_events,
    live_messages,
    new_task,
    post_chat,
    spoken,
    user,
    wait_for,
    wait_for_history,
)

AGENT_KEY = "fault-agent-key-0123456789"
PATH = "/v1/chat/completions"


@pytest.fixture
def proxy(stateful_proxy, monkeypatch):
    monkeypatch.setenv("FAULT_AGENT_KEY", AGENT_KEY)
    return stateful_proxy(
        keys=[KeySpec(name="agent", key_env="FAULT_AGENT_KEY", profile="concierge")],
        profiles={"concierge": ProfileSpec(tools=["lookup"], filler_phrases=["Just a second."])},
    )


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {AGENT_KEY}"}


def open_raw(proxy, task: str, body: dict, request_id: str | None = None) -> RawStream:
    return RawStream(proxy.url, PATH, body, {**engine_headers(task, request_id), **auth()})


def settled(proxy) -> bool:
    return proxy.state.concurrency.active == 0


def next_turn_is_clean(proxy, mock, task: str) -> list[dict]:
    """One more normal turn; returns the prompt the upstream got, after checking it."""
    response = post_chat(proxy, task, chat_body("and now?", reply="Still here."), headers=auth())
    assert spoken(data_events(response.text)) == "Still here."
    prompt = mock.requests[-1].body["messages"]
    assert prompt[0] == SYSTEM and prompt[-1] == user("and now?")
    assert_valid_history([{**m, "request_id": None} for m in prompt[1:]])
    assert_valid_history(live_messages(proxy, task))
    return prompt


def test_before_the_body_is_sent(proxy, mock):
    task = new_task()
    raw = open_raw(proxy, task, chat_body("a sentence that never fully arrives"))
    raw.send_head_and_part(0.5)
    time.sleep(0.2)
    raw.close()
    assert wait_for(lambda: settled(proxy), timeout=3), "the request never left the gate"
    time.sleep(0.3)
    assert mock.requests == []  # nothing was sent upstream
    assert live_messages(proxy, task) == []
    assert next_turn_is_clean(proxy, mock, task) == [SYSTEM, user("and now?")]


def test_during_the_upstream_wait(proxy, mock):
    task = new_task()
    raw = open_raw(proxy, task, chat_body("are you there?", first_token_ms=5000), "req-1")
    raw.send()
    mock.wait_for_requests(1, timeout=3)
    raw.close()
    left = time.monotonic()
    record = mock.wait_for_outcome(0, timeout=3)
    assert record.outcome == "client_closed"
    assert record.ended_at - left < 1.0
    assert wait_for(lambda: settled(proxy), timeout=3)
    # The user spoke: the turn is kept (with no reply) so the model knows what was said.
    messages = wait_for_history(proxy, task, 1)
    assert [(m["role"], m["content"]) for m in messages] == [("user", "are you there?")]
    # The engine retries under the same request id: still one user turn.
    retry = post_chat(
        proxy, task, chat_body("are you there?", reply="Yes."), request_id="req-1", headers=auth()
    )
    assert spoken(data_events(retry.text)) == "Yes."
    messages = live_messages(proxy, task)
    assert [(m["role"], m["content"]) for m in messages] == [
        ("user", "are you there?"),
        ("assistant", "Yes."),
    ]
    next_turn_is_clean(proxy, mock, task)


def test_a_retry_without_request_id_ends_the_attempt_it_repeats(proxy, mock):
    """A framework times out and resends the same messages with no request id, before
    the proxy has seen the first connection go: the retry ends the first attempt and
    stores the user turn once (Pipecat did this: the turn was stored twice)."""
    task = new_task()
    headers = {**engine_headers(task), **auth()}
    del headers["X-Request-Id"]  # a framework's client: the same headers on every call
    raw = RawStream(proxy.url, PATH, chat_body("are you there?", first_token_ms=5000), headers)
    raw.send()
    mock.wait_for_requests(1, timeout=3)
    # The first connection stays open: the proxy cannot have seen it go.
    retry = httpx.post(
        proxy.url + PATH, json=chat_body("are you there?", reply="Yes."), headers=headers
    )
    assert spoken(data_events(retry.text)) == "Yes."
    raw.close()  # now it goes (an attempt still running would record its turn now)
    assert wait_for(lambda: settled(proxy), timeout=3)
    assert [r.outcome for r in mock.requests] == ["client_closed", "completed"]
    assert [(m["role"], m["content"]) for m in live_messages(proxy, task)] == [
        ("user", "are you there?"),
        ("assistant", "Yes."),
    ]
    assert proxy.state.chat.streams_in_flight == 0
    next_turn_is_clean(proxy, mock, task)


def test_during_the_upstream_wait_non_streaming(proxy, mock):
    task = new_task()
    body = chat_body("are you there?", stream=False, first_token_ms=4000)
    with contextlib.suppress(httpx.ReadTimeout):
        post_chat(
            proxy,
            task,
            body,
            request_id="req-ns",
            headers=auth(),
            timeout=httpx.Timeout(0.5, connect=5),
        )
    left = time.monotonic()
    record = mock.wait_for_outcome(0, timeout=6)
    assert record.outcome == "client_closed"
    assert record.ended_at - left < 1.0
    assert wait_for(lambda: settled(proxy), timeout=3)
    # As for a stream: the user's turn is kept, with no reply (none was heard).
    messages = wait_for_history(proxy, task, 1)
    assert [(m["role"], m["content"]) for m in messages] == [("user", "are you there?")]
    retry = post_chat(
        proxy,
        task,
        chat_body("are you there?", stream=False, reply="Yes."),
        request_id="req-ns",
        headers=auth(),
    )
    assert retry.status_code == 200 and retry.json()["choices"][0]["message"]["content"] == "Yes."
    assert [(m["role"], m["content"]) for m in live_messages(proxy, task)] == [
        ("user", "are you there?"),
        ("assistant", "Yes."),
    ]
    next_turn_is_clean(proxy, mock, task)


def test_a_non_streaming_reply_is_unchanged_while_the_caller_stays(proxy, mock):
    task = new_task()
    body = chat_body("hello", stream=False, reply="Hi there.", first_token_ms=300)
    response = post_chat(proxy, task, body, headers=auth())
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "Hi there."
    assert mock.requests[0].outcome == "completed"
    assert [(m["role"], m["content"]) for m in live_messages(proxy, task)] == [
        ("user", "hello"),
        ("assistant", "Hi there."),
    ]
    assert settled(proxy)


def test_mid_stream(proxy, mock):
    task = new_task()
    post_chat(proxy, task, chat_body("hello", reply="Hello!"), headers=auth())
    full = "Once upon a time there was a very long story about the sea and a lighthouse."
    raw = open_raw(proxy, task, chat_body("tell me a story", reply=full, chunks=16, gap_ms=100))
    raw.send()
    raw.read_until_text("a time")
    raw.close()
    left = time.monotonic()
    record = mock.wait_for_outcome(1, timeout=3)
    assert record.outcome == "client_closed"
    assert record.ended_at - left < 1.0
    heard = raw.received_text()
    messages = wait_for_history(proxy, task, 4)
    assert_valid_history(messages)
    assert [(m["role"], m["interrupted"]) for m in messages] == [
        ("user", False),
        ("assistant", False),
        ("user", False),
        ("assistant", True),
    ]
    stored = messages[-1]["content"]
    assert stored.startswith(heard) and full.startswith(stored) and stored != full
    prompt = next_turn_is_clean(proxy, mock, task)
    assert prompt[-2] == {"role": "assistant", "content": stored}


def test_right_before_done(proxy, mock):
    task = new_task()
    full = "One two three four five."
    # Five content chunks at once, then 500 ms before the finish chunk and [DONE].
    raw = open_raw(proxy, task, chat_body("count", reply=full, chunks=5, gap_ms=500))
    raw.send()
    raw.read_until_text(full, exact=True)
    assert b"[DONE]" not in raw.buffer
    raw.close()
    record = mock.wait_for_outcome(0, timeout=5)
    assert record.outcome == "client_closed"
    messages = wait_for_history(proxy, task, 2)
    assert_valid_history(messages)
    assert [(m["role"], m["content"]) for m in messages] == [("user", "count"), ("assistant", full)]
    next_turn_is_clean(proxy, mock, task)


def test_during_a_tool_call(proxy, mock, silent_server):
    created = httpx.post(
        f"{proxy.url}/admin/tools",
        headers=ADMIN_HEADERS,
        json={
            "name": "lookup",
            "description": "Look something up",
            "url": f"{silent_server.url}/lookup",
            "allow_private_network": True,
            "timeout_seconds": 10,
        },
        timeout=10,
    )
    assert created.status_code == 201, created.text
    task = new_task()
    mock.script([{"tool_calls": [{"name": "lookup", "arguments": {"q": "x"}}]}, {"reply": "Done."}])
    raw = open_raw(proxy, task, chat_body("look it up"))
    raw.send()
    raw.read_until_text("Just a second.")
    assert wait_for(lambda: silent_server.accepted, timeout=3), "the tool was never called"
    raw.close()
    left = time.monotonic()
    # The tool call is abandoned with the request, and the model is never asked again.
    assert wait_for(lambda: silent_server.closed, timeout=3), "the tool connection stayed open"
    assert silent_server.closed[0] - left < 1.0
    time.sleep(0.3)
    assert len(mock.requests) == 1
    assert wait_for(lambda: settled(proxy), timeout=3)
    messages = wait_for_history(proxy, task, 2)
    assert_valid_history(messages)
    assert [(m["role"], m["content"], m["interrupted"]) for m in messages] == [
        ("user", "look it up", False),
        ("assistant", "Just a second.", True),
    ]
    next_turn_is_clean(proxy, mock, task)


def test_while_the_turn_is_being_committed(stateful_proxy, mock, throwaway_redis):
    """The last chunk went out; the commit before [DONE] is slow (Redis stalls 1.5 s)."""
    proxy = stateful_proxy(redis_url=throwaway_redis.url, redis_timeout_ms=3000)
    task = new_task()
    post_chat(proxy, task, chat_body("hello", reply="Hello!"))
    full = "One two three four five."
    raw = open_raw(proxy, task, chat_body("count", reply=full, chunks=5, gap_ms=400))
    raw.send()
    raw.read_until_text("One two three four")  # the last piece is 400 ms away
    throwaway_redis.pause()
    try:
        raw.read_until(b'"finish_reason":"stop"')  # everything is out; the commit waits
        raw.close()
        time.sleep(0.5)
    finally:
        throwaway_redis.resume()
    assert wait_for(lambda: settled(proxy), timeout=5)
    messages = wait_for_history(proxy, task, 4, timeout=5)
    assert_valid_history(messages)
    assert [(m["role"], m["content"]) for m in messages] == [
        ("user", "hello"),
        ("assistant", "Hello!"),
        ("user", "count"),
        ("assistant", full),
    ]


QUICK_KEY, RAG_KEY = "fault-quick-key-0123456789", "fault-rag-key-0123456789"


def test_while_waiting_for_fast_first_words(stateful_proxy, mock, monkeypatch):
    """Left before the profile's filler is due: no filler, the upstream closed, turn kept."""
    monkeypatch.setenv("FAULT_QUICK_KEY", QUICK_KEY)
    proxy = stateful_proxy(
        keys=[KeySpec(name="quick", key_env="FAULT_QUICK_KEY", profile="quick")],
        profiles={"quick": ProfileSpec(fast_first_words_ms=3000, filler_phrases=["One moment."])},
        redis_timeout_ms=2000,  # a loaded CI machine must not make the store look slow
    )
    task = new_task()
    headers = {**engine_headers(task), "Authorization": f"Bearer {QUICK_KEY}"}
    raw = RawStream(proxy.url, PATH, chat_body("hello?", first_token_ms=5000), headers)
    raw.send()
    mock.wait_for_requests(1, timeout=3)
    raw.close()
    left = time.monotonic()
    record = mock.wait_for_outcome(0, timeout=3)
    assert record.outcome == "client_closed" and record.ended_at - left < 1.0
    assert wait_for(lambda: settled(proxy), timeout=3)
    messages = wait_for_history(proxy, task, 1)
    assert [(m["role"], m["content"]) for m in messages] == [("user", "hello?")]
    assert proxy.state.chat.streams_in_flight == 0


def test_during_retrieval(stateful_proxy, mock, monkeypatch):
    """Left while the knowledge base is searched: the model is never asked, turn kept."""
    from tests.knowledge.embeddings_server import EmbeddingsServer

    monkeypatch.setenv("FAULT_RAG_KEY", RAG_KEY)
    embeddings = EmbeddingsServer().start()
    try:
        proxy = stateful_proxy(
            keys=[KeySpec(name="rag", key_env="FAULT_RAG_KEY", profile="rag")],
            profiles={"rag": ProfileSpec(knowledge_bases=["store"])},
            embeddings_base_url=embeddings.base_url,
            redis_timeout_ms=2000,  # a loaded CI machine must not make the store look slow
        )
        bases = f"{proxy.url}/admin/knowledge-bases"
        assert httpx.post(bases, json={"name": "store"}, headers=ADMIN_HEADERS).status_code == 201
        document = {"source_id": "hours", "content": "The shop opens at nine."}
        added = httpx.post(f"{bases}/store/documents", json=document, headers=ADMIN_HEADERS)
        assert added.status_code in (200, 201), added.text
        # The query embedding now hangs, and the proxy waits for it far longer than the
        # caller stays: whatever happens next is the proxy noticing the caller left.
        embeddings.delay_seconds = 5.0
        proxy.state.retriever.query_timeout = 4.0
        embedded = len(embeddings.requests)

        task = new_task()
        headers = {**engine_headers(task, "req-1"), "Authorization": f"Bearer {RAG_KEY}"}
        raw = RawStream(proxy.url, PATH, chat_body("when do you open?"), headers)
        raw.send()
        assert wait_for(lambda: len(embeddings.requests) > embedded, timeout=3)
        raw.close()
        assert wait_for(lambda: settled(proxy), timeout=3)
        time.sleep(1.0)  # nothing goes on without the caller
        assert mock.requests == []
        messages = wait_for_history(proxy, task, 1)
        assert [(m["role"], m["content"]) for m in messages] == [("user", "when do you open?")]
        assert proxy.state.chat.streams_in_flight == 0
    finally:
        embeddings.stop()
