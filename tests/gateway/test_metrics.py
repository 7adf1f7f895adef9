"""GET /metrics: the series move as requests, errors, fallbacks and interruptions happen."""

from __future__ import annotations

import json
import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

from proxy.settings import ModelRoute, UpstreamTarget
from proxy.voice.signing import sign


def scrape(proxy) -> dict[tuple[str, tuple], float]:
    text = httpx.get(proxy.url + "/metrics").text
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_series_move_with_traffic(make_proxy, mock):
    targets = [
        UpstreamTarget(base_url=mock.scenario_url(status=503)),
        UpstreamTarget(base_url=mock.base_url),
    ]
    proxy = make_proxy(
        # No cooldown: every request meets the failing target (a fallback each time).
        routes={
            "voice": ModelRoute(targets=targets, cooldown_seconds=0),
            "down": ModelRoute(targets=targets[:1], cooldown_seconds=0),
        },
        callback_sign_key="k",
    )
    url = proxy.base_url + "/chat/completions"
    before = scrape(proxy)
    body = {
        "model": "voice",
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "hi"}],
    }
    paced = {**body, "mock": {"gap_ms": 10, "chunks": 3}}
    assert httpx.post(url, json=paced, headers={"X-Task-Id": "metrics-task"}).status_code == 200
    assert httpx.post(url, json={**body, "model": "down"}).status_code == 502
    with httpx.stream(
        "POST", url, json={**body, "mock": {"gap_ms": 200}}, headers={"X-Task-Id": "t2"}
    ) as r:
        next(r.iter_lines())  # then hang up: an interruption
    raw = json.dumps(
        {
            "EventType": 906,
            "EventInfo": {
                "EventMsTs": 1,
                "TaskId": "t2",
                "Payload": {"Metric": "llm_first_token", "Value": 218, "Tag": {"RoundId": "r"}},
            },
        }
    ).encode()
    httpx.post(proxy.url + "/callbacks/trtc", content=raw, headers={"Sign": sign("k", raw)})
    time.sleep(0.3)
    after = scrape(proxy)

    def moved(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    route = "/v1/chat/completions"
    assert moved("proxy_requests_total", route=route, model="voice", status="200") == 2
    assert moved("proxy_requests_total", route=route, model="down", status="502") == 1
    assert moved("proxy_upstream_fallbacks_total", gen_ai_request_model="voice") == 2
    assert (
        moved("gen_ai_server_time_to_first_token_seconds_count", gen_ai_request_model="voice") == 2
    )
    assert moved("proxy_overhead_seconds_count") == 2
    assert moved("proxy_stream_chunk_gap_seconds_count") >= 1
    assert (
        moved(
            "gen_ai_client_token_usage_count",
            gen_ai_token_type="output",
            gen_ai_request_model="voice",
        )
        == 1
    )
    assert moved("proxy_interruptions_total") == 1
    assert moved("proxy_callback_events_total", event_type="906") == 1
    assert moved("proxy_engine_metric_milliseconds_sum", metric="llm_first_token") == 218
    assert value(after, "proxy_active_streams") == 0
    assert ("proxy_store_errors_total", (("store", "redis"),)) in after
