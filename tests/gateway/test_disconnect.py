"""A caller that leaves cancels the upstream request at once."""

from __future__ import annotations

import contextlib
import time

import httpx


def wait_for(predicate, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_disconnect_mid_stream_closes_the_upstream(make_proxy, mock):
    proxy = make_proxy()
    body = {
        "model": "m",
        "stream": True,
        "messages": [{"role": "user", "content": "tell me a long story"}],
        "mock": {"chunks": 50, "gap_ms": 100},
    }
    with httpx.stream("POST", proxy.base_url + "/chat/completions", json=body) as response:
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")
    left_at = time.monotonic()
    assert wait_for(lambda: mock.requests and mock.requests[0].outcome == "client_closed")
    # Closed well before the 5 s the full answer would take.
    assert mock.requests[0].ended_at - mock.requests[0].started_at < 2.0
    assert time.monotonic() - left_at < 2.0


def test_disconnect_before_the_first_token_closes_the_upstream(make_proxy, mock):
    proxy = make_proxy()
    body = {
        "model": "m",
        "stream": True,
        "messages": [{"role": "user", "content": "hi"}],
        "mock": {"first_token_ms": 5000},
    }
    with httpx.Client() as client, contextlib.suppress(httpx.ReadTimeout):
        client.post(proxy.base_url + "/chat/completions", json=body, timeout=0.3)
    assert wait_for(lambda: mock.requests and mock.requests[0].outcome == "client_closed")
    assert mock.requests[0].ended_at - mock.requests[0].started_at < 2.0
