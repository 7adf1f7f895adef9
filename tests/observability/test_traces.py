"""Traces reach a real OTLP/HTTP receiver: a span per turn naming the task, child spans."""

from __future__ import annotations

import logging

import httpx

from proxy.dev.mock.behaviour import reported_usage
from proxy.observability.tracing import Tracing
from proxy.settings import KeySpec, ProfileSpec
from tests.gateway.test_tool_loop import ToolServer
from tests.observability.otlp_receiver import OtlpReceiver

APP = "1400000001"
ADMIN = "admin-token-for-tests-0123456789"


def test_a_turn_is_exported_as_a_span_naming_the_task(make_proxy, mock, caplog):
    caplog.set_level(logging.INFO, logger="proxy.access")
    with OtlpReceiver() as receiver:
        proxy = make_proxy(redis=True, OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url)
        headers = {"X-Task-Id": "task-traced", "X-Sdk-App-Id": APP, "X-Request-Id": "req-7"}
        body = {
            "model": "gpt-test",
            "stream": True,
            "max_tokens": 64,
            "messages": [{"role": "user", "content": "what is the weather like?"}],
            "mock": {"chunks": 5},
        }
        for request_id in ("req-7", "req-8"):
            reply = httpx.post(
                proxy.base_url + "/chat/completions",
                json=body,
                headers={**headers, "X-Request-Id": request_id},
                timeout=10,
            )
            assert reply.status_code == 200
            assert reply.headers["x-request-id"] == request_id
        proxy.stop()  # the provider's shutdown exports what is batched

    assert set(receiver.paths) == {"/v1/traces"}
    turns = [s for s in receiver.spans if s.name == "chat gpt-test"]
    assert [t.attributes["proxy.request_id"] for t in turns] == ["req-7", "req-8"]
    first, second = turns
    assert first.attributes["gen_ai.conversation.id"] == f"{APP}:task-traced"
    assert first.attributes["proxy.task_key"] == f"{APP}:task-traced"
    assert first.attributes["gen_ai.operation.name"] == "chat"
    assert first.attributes["gen_ai.request.model"] == "gpt-test"
    assert first.attributes["gen_ai.request.max_tokens"] == 64
    assert first.attributes["gen_ai.usage.output_tokens"] == 5
    for span, request in zip(turns, mock.requests, strict=True):
        reported = reported_usage(request.behaviour, request.body, request.cached_tokens or 0)
        assert span.attributes["gen_ai.usage.input_tokens"] == reported["prompt_tokens"]
        cached = reported["prompt_tokens_details"]["cached_tokens"]
        assert span.attributes["gen_ai.usage.cache_read.input_tokens"] == cached
    assert second.attributes["gen_ai.usage.cache_read.input_tokens"] > 0  # a shared prefix
    assert (first.attributes["proxy.round"], second.attributes["proxy.round"]) == (1, 2)
    assert first.resource["service.name"] == "voice-llm-proxy"
    children = {s.name: s for s in receiver.spans if s.parent_span_id == first.span_id}
    assert set(children) == {"proxy.store", "proxy.upstream.first_token", "proxy.commit"}
    assert all(c.trace_id == first.trace_id for c in children.values())
    # The access log line of each turn carries its trace id, request id and task.
    lines = [r for r in caplog.records if r.name == "proxy.access"]
    assert [(r.request_id, r.trace_id, r.status) for r in lines] == [
        ("req-7", first.trace_id, 200),
        ("req-8", second.trace_id, 200),
    ]


def test_an_interrupted_turns_commit_is_a_child_of_its_turn(make_proxy, mock):
    with OtlpReceiver() as receiver:
        proxy = make_proxy(redis=True, OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url)
        headers = {"X-Task-Id": "task-cut", "X-Sdk-App-Id": APP}
        body = {
            "model": "gpt-test",
            "stream": True,
            "messages": [{"role": "user", "content": "tell me a long story"}],
            "mock": {"chunks": 50, "gap_ms": 100},
        }
        with httpx.stream(
            "POST",
            proxy.base_url + "/chat/completions",
            json=body,
            headers={**headers, "X-Request-Id": "req-cut"},
            timeout=10,
        ) as response:
            assert next(response.iter_lines()).startswith("data: ")  # then the caller hangs up
        # The task's next turn waits for the interrupted one's write: it has landed after.
        quick = {**body, "mock": {"chunks": 2}}
        reply = httpx.post(
            proxy.base_url + "/chat/completions",
            json=quick,
            headers={**headers, "X-Request-Id": "req-next"},
            timeout=10,
        )
        assert reply.status_code == 200
        proxy.stop()

    turns = {
        s.attributes["proxy.request_id"]: s for s in receiver.spans if s.name == "chat gpt-test"
    }
    assert set(turns) == {"req-cut", "req-next"}
    for request_id, interrupted in (("req-cut", True), ("req-next", False)):
        turn = turns[request_id]
        commits = [
            s
            for s in receiver.spans
            if s.parent_span_id == turn.span_id and s.name == "proxy.commit"
        ]
        assert [c.attributes["proxy.interrupted"] for c in commits] == [interrupted]
        assert commits[0].trace_id == turn.trace_id


def test_tracing_is_off_without_an_endpoint():
    tracing = Tracing.start(None, "0")
    assert not tracing.enabled and tracing.tracer is None
    with tracing.turn({"a": 1}) as span:
        assert span is None


def test_retrieval_and_each_tool_call_are_spans_of_their_turn(make_proxy, mock, monkeypatch):
    monkeypatch.setenv("TEST_AGENT_KEY", "agent-key")
    tools = ToolServer()
    try:
        with OtlpReceiver() as receiver:
            proxy = make_proxy(
                redis=True,
                admin_token=ADMIN,
                OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
                keys=[KeySpec(name="agent", key_env="TEST_AGENT_KEY", profile="traced")],
                profiles={
                    "traced": ProfileSpec(
                        tools=["weather", "broken"],
                        knowledge_bases=["faq"],
                        filler_phrases=["One moment."],
                    )
                },
            )
            admin = {"Authorization": f"Bearer {ADMIN}"}
            created = [
                httpx.post(
                    f"{proxy.url}/admin/knowledge-bases", json={"name": "faq"}, headers=admin
                ),
                httpx.post(
                    f"{proxy.url}/admin/knowledge-bases/faq/documents",
                    json={"source_id": "sky", "title": "Sky", "content": "Paris is often sunny."},
                    headers=admin,
                ),
            ]
            for name in ("weather", "broken"):
                tool = {
                    "name": name,
                    "description": f"The {name} tool",
                    "parameters": {"type": "object", "properties": {}},
                    "url": f"{tools.url}/{name}",
                    "allow_private_network": True,
                }
                created.append(httpx.post(f"{proxy.url}/admin/tools", json=tool, headers=admin))
            assert [r.status_code for r in created] == [201] * 4
            calls = [{"name": "weather", "arguments": {}}, {"name": "broken", "arguments": {}}]
            mock.script([{"tool_calls": calls}, {"reply": "It is sunny."}])
            reply = httpx.post(
                proxy.base_url + "/chat/completions",
                json={
                    "model": "m",
                    "stream": True,
                    "messages": [{"role": "user", "content": "Is Paris sunny?"}],
                },
                headers={
                    "Authorization": "Bearer agent-key",
                    "X-Task-Id": "t",
                    "X-Request-Id": "r1",
                },
                timeout=20,
            )
            assert reply.status_code == 200
            proxy.stop()
    finally:
        tools.httpd.shutdown()

    (turn,) = [s for s in receiver.spans if s.name == "chat m"]
    children = [s for s in receiver.spans if s.parent_span_id == turn.span_id]
    retrieval = [s for s in children if s.name == "proxy.retrieval"]
    assert [s.attributes["proxy.knowledge_bases"] for s in retrieval] == ["faq"]
    ran = sorted(
        (s.attributes["gen_ai.tool.name"], s.attributes["proxy.tool.ok"])
        for s in children
        if s.name.startswith("proxy.tool ")
    )
    assert ran == [("broken", False), ("weather", True)]
    assert all(s.trace_id == turn.trace_id for s in children)
