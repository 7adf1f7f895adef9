"""Hedging and cooldown of upstream targets (issue 17), through real proxies."""

from __future__ import annotations

import time

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families

from proxy.settings import ModelRoute, UpstreamTarget


def chat(proxy, **mock_behaviour) -> httpx.Response:
    body = {
        "model": "voice",
        "stream": True,
        "messages": [{"role": "user", "content": "hi"}],
        "mock": mock_behaviour,
    }
    return httpx.post(proxy.base_url + "/chat/completions", json=body, timeout=10)


def answered_by(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    models = {
        orjson.loads(line[6:])["model"]
        for line in response.text.split("\n")
        if line.startswith("data: {")
    }
    assert len(models) == 1
    return models.pop()


def metric(proxy, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(httpx.get(proxy.url + "/metrics").text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return 0.0


def label(target: UpstreamTarget) -> str:
    return f"{target.base_url} {target.model}"


def test_a_hedge_starts_the_next_target_and_the_first_speakable_token_wins(make_proxy, mock):
    slow = UpstreamTarget(base_url=mock.scenario_url(first_token_ms=1500), model="slow")
    fast = UpstreamTarget(base_url=mock.base_url, model="fast")
    proxy = make_proxy(routes={"voice": ModelRoute(targets=[slow, fast], hedge_after_ms=100)})
    assert answered_by(chat(proxy)) == "fast"
    assert [r.body["model"] for r in mock.requests] == ["slow", "fast"]
    loser = mock.wait_for_outcome(0)
    assert loser.outcome == "client_closed"
    assert loser.ended_at - loser.started_at < 1.0  # closed at once, not at its 1.5 s
    assert metric(proxy, "proxy_upstream_hedges_total", route="voice", target=label(fast)) == 1
    assert metric(proxy, "proxy_upstream_hedge_wins_total", route="voice", target=label(fast)) == 1
    # A hedge loser is not a failed target: it is used again (no cooldown).
    mock.clear()
    assert answered_by(chat(proxy)) == "fast"
    assert [r.body["model"] for r in mock.requests] == ["slow", "fast"]


def test_the_first_target_still_wins_a_hedge_it_answers_first(make_proxy, mock):
    first = UpstreamTarget(base_url=mock.scenario_url(first_token_ms=300), model="first")
    second = UpstreamTarget(base_url=mock.scenario_url(first_token_ms=1500), model="second")
    proxy = make_proxy(routes={"voice": ModelRoute(targets=[first, second], hedge_after_ms=100)})
    assert answered_by(chat(proxy)) == "first"
    assert [r.body["model"] for r in mock.requests] == ["first", "second"]
    assert mock.wait_for_outcome(1).outcome == "client_closed"
    assert metric(proxy, "proxy_upstream_hedge_wins_total", route="voice", target=label(first)) == 1


def test_no_hedge_when_the_first_target_is_quick(make_proxy, mock):
    targets = [
        UpstreamTarget(base_url=mock.base_url, model="a"),
        UpstreamTarget(base_url=mock.base_url, model="b"),
    ]
    proxy = make_proxy(routes={"voice": ModelRoute(targets=targets, hedge_after_ms=300)})
    for _ in range(3):
        assert answered_by(chat(proxy)) == "a"
    assert [r.body["model"] for r in mock.requests] == ["a", "a", "a"]
    assert (
        metric(proxy, "proxy_upstream_hedges_total", route="voice", target=label(targets[1])) == 0
    )


def test_a_dead_target_is_skipped_by_later_requests(make_proxy, mock):
    dead = UpstreamTarget(
        base_url=mock.scenario_url(hang=True), model="dead", first_token_timeout=0.3
    )
    good = UpstreamTarget(base_url=mock.base_url, model="good")
    proxy = make_proxy(routes={"voice": ModelRoute(targets=[dead, good], cooldown_seconds=30)})
    for _ in range(8):
        assert answered_by(chat(proxy)) == "good"
    assert [r.body["model"] for r in mock.requests] == ["dead", "good"] + ["good"] * 7
    skips = metric(proxy, "proxy_upstream_cooldown_skips_total", route="voice", target=label(dead))
    assert skips == 7


def test_one_probe_brings_a_target_back_after_its_cooldown(make_proxy, mock):
    a = UpstreamTarget(base_url=mock.base_url, model="a")
    b = UpstreamTarget(base_url=mock.base_url, model="b")
    proxy = make_proxy(routes={"voice": ModelRoute(targets=[a, b], cooldown_seconds=0.5)})
    # One request per script step: a fails once (503), then everything answers.
    mock.script([{"status": 503}, {}, {}, {}, {}, {}])
    assert answered_by(chat(proxy)) == "b"  # a failed: fallback
    assert answered_by(chat(proxy)) == "b"  # a cooling down: skipped
    time.sleep(0.6)
    assert answered_by(chat(proxy)) == "a"  # the probe, answered: a is back
    assert answered_by(chat(proxy)) == "a"
    assert [r.body["model"] for r in mock.requests] == ["a", "b", "b", "a", "a"]


def test_a_route_whose_only_target_cools_down_still_tries_it(make_proxy, mock):
    proxy = make_proxy(
        routes={"voice": ModelRoute(targets=[UpstreamTarget(base_url=mock.base_url)])}
    )
    mock.script([{"status": 503}, {}])
    assert chat(proxy).status_code == 502
    assert chat(proxy).status_code == 200  # a blip is not an outage
    assert len(mock.requests) == 2


def test_replicas_share_cooldowns_through_redis(make_proxy, mock):
    a = UpstreamTarget(base_url=mock.base_url, model="a", first_token_timeout=0.3)
    good = UpstreamTarget(base_url=mock.base_url, model="good")
    routes = {"voice": ModelRoute(targets=[a, good], cooldown_seconds=30)}
    first, second = make_proxy(redis=True, routes=routes), make_proxy(redis=True, routes=routes)
    # One request per script step: a answers, then goes silent.
    mock.script([{}, {"hang": True}, {}, {}, {}, {}, {}])
    assert answered_by(chat(first)) == "a"  # the first replica knows a as healthy
    assert answered_by(chat(second)) == "good"  # the second meets a silent: falls back
    time.sleep(1.2)  # the first replica syncs (every 0.5 s)
    assert answered_by(chat(first)) == "good"
    third = make_proxy(redis=True, routes=routes)  # a new replica asks on first sight
    assert answered_by(chat(third)) == "good"
    assert [r.body["model"] for r in mock.requests] == ["a", "a", "good", "good", "good"]
