"""Fallback to the next target, only before the first byte reaches the caller."""

from __future__ import annotations

import httpx
import openai

from proxy.settings import ModelRoute, UpstreamTarget
from tests.servers import free_port


def test_targets_are_tried_in_order_until_one_answers(make_proxy, mock):
    dead_port = free_port()  # nothing listens there: connection refused
    targets = [
        UpstreamTarget(base_url=f"http://127.0.0.1:{dead_port}/v1", connect_timeout=0.5),
        UpstreamTarget(base_url=mock.scenario_url(status=503), model="first"),
        UpstreamTarget(base_url=mock.scenario_url(status=429), model="second"),
        UpstreamTarget(
            base_url=mock.scenario_url(first_token_ms=5000), model="third", first_token_timeout=0.3
        ),
        UpstreamTarget(base_url=mock.base_url, model="fourth"),
    ]
    proxy = make_proxy(routes={"voice": ModelRoute(targets=targets)})
    client = openai.OpenAI(base_url=proxy.base_url, api_key="x", max_retries=0)
    chunks = list(
        client.chat.completions.create(
            model="voice", messages=[{"role": "user", "content": "hi"}], stream=True
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).startswith(
        "Reply to: hi"
    )
    assert [r.body["model"] for r in mock.requests] == ["first", "second", "third", "fourth"]
    assert chunks[0].model == "fourth"


def test_unknown_models_go_to_the_default_upstream_unchanged(make_proxy, mock):
    proxy = make_proxy(
        routes={"voice": ModelRoute(targets=[UpstreamTarget(base_url=mock.base_url, model="x")])}
    )
    openai.OpenAI(base_url=proxy.base_url, api_key="x").chat.completions.create(
        model="deepseek-chat", messages=[{"role": "user", "content": "hi"}]
    )
    assert mock.requests[-1].body["model"] == "deepseek-chat"


def test_failure_after_the_first_byte_is_an_error_event_then_done(make_proxy, mock):
    proxy = make_proxy()
    for behaviour, fragment in (
        ({"fail_after_chunks": 3}, "broke"),
        ({"malformed_after_chunks": 2}, "not JSON"),
    ):
        body = {
            "model": "m",
            "stream": True,
            "messages": [{"role": "user", "content": "hi"}],
            "mock": behaviour,
        }
        response = httpx.post(proxy.base_url + "/chat/completions", json=body)
        assert response.status_code == 200
        events = [line[6:] for line in response.text.split("\n") if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        error = httpx.Response(200, content=events[-2]).json()["error"]
        assert set(error) == {"message", "type", "code", "param"}
        assert fragment in error["message"]
        assert len(mock.requests) == 1  # no retry once bytes were sent
        mock.clear()


def test_fallback_also_for_non_streaming(make_proxy, mock):
    targets = [
        UpstreamTarget(base_url=mock.scenario_url(status=502), model="a"),
        UpstreamTarget(base_url=mock.base_url, model="b"),
    ]
    proxy = make_proxy(routes={"voice": ModelRoute(targets=targets)})
    body = {"model": "voice", "messages": [{"role": "user", "content": "hi"}]}
    response = httpx.post(proxy.base_url + "/chat/completions", json=body)
    assert response.status_code == 200
    assert [r.body["model"] for r in mock.requests] == ["a", "b"]
