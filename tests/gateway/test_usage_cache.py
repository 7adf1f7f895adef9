"""Usage is always asked upstream; cached prompt tokens are counted (issue 17)."""

from __future__ import annotations

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families

from proxy.dev.mock.behaviour import prompt_tokens
from proxy.dev.mock.cache import PromptCache
from proxy.settings import ModelRoute, UpstreamTarget


def metric(proxy, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(httpx.get(proxy.url + "/metrics").text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return 0.0


def chunks(response: httpx.Response) -> list[dict]:
    return [
        orjson.loads(line[6:]) for line in response.text.split("\n") if line.startswith("data: {")
    ]


def test_usage_is_asked_upstream_and_cached_tokens_are_counted(make_proxy, mock):
    # A configured model name is a metric label of its own (others are "other").
    proxy = make_proxy(routes={"m": ModelRoute(targets=[UpstreamTarget(base_url=mock.base_url)])})
    headers = {"X-Task-Id": "cache-task"}
    for turn in range(3):
        body = {
            "model": "m",
            "stream": True,
            "messages": [
                {"role": "system", "content": "You are a helpful voice assistant. " * 20},
                {"role": "user", "content": f"question {turn}"},
            ],
        }
        response = httpx.post(proxy.base_url + "/chat/completions", json=body, headers=headers)
        got = chunks(response)
        # The caller did not ask for usage: no usage chunk reaches it.
        assert [c for c in got if c.get("usage")] == []
        assert all(c["choices"] for c in got)
    sent = [r.body for r in mock.requests]
    assert [b["stream_options"] for b in sent] == [{"include_usage": True}] * 3
    # What the upstream reported as served from its cache (the mock's prefix model).
    model = PromptCache()
    cached = [model.cached_tokens(b["messages"], prompt_tokens(b["messages"])) for b in sent]
    prompts = [prompt_tokens(b["messages"]) for b in sent]
    assert cached[0] == 0 and cached[1] > 0 and cached[2] > cached[1]
    hits = metric(proxy, "proxy_upstream_prompt_cache_hit_tokens_total", gen_ai_request_model="m")
    assert hits == sum(cached)
    total = metric(proxy, "proxy_upstream_prompt_tokens_total", gen_ai_request_model="m")
    assert total == sum(prompts)


def test_a_caller_that_asks_for_usage_gets_the_usage_chunk(make_proxy, mock):
    proxy = make_proxy()
    body = {
        "model": "m",
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "hi"}],
    }
    got = chunks(httpx.post(proxy.base_url + "/chat/completions", json=body))
    usage = [c["usage"] for c in got if c.get("usage")]
    assert len(usage) == 1
    assert usage[0]["prompt_tokens_details"] == {"cached_tokens": 0}
    assert got[-1]["choices"] == [] and got[-1]["usage"] == usage[0]
