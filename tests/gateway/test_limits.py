"""Per-key rate limits shared across replicas, and the per-process concurrency cap."""

from __future__ import annotations

import threading
import time

import httpx

from proxy.settings import KeySpec
from tests.faults.helpers import wait_for

BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def test_a_keys_rate_limit_holds_across_replicas(make_proxy, mock, monkeypatch):
    monkeypatch.setenv("TEST_LIMITED_KEY", "limited-key")
    monkeypatch.setenv("TEST_FREE_KEY", "free-key")
    keys = [
        KeySpec(name="limited", key_env="TEST_LIMITED_KEY", rate_limit_per_minute=3),
        KeySpec(name="free", key_env="TEST_FREE_KEY"),
    ]
    replicas = [make_proxy(redis=True, keys=keys), make_proxy(redis=True, keys=keys)]
    limited = {"Authorization": "Bearer limited-key"}
    statuses = [
        httpx.post(
            replicas[n % 2].base_url + "/chat/completions", json=BODY, headers=limited
        ).status_code
        for n in range(3)
    ]
    assert statuses == [200, 200, 200]
    refused = httpx.post(replicas[1].base_url + "/chat/completions", json=BODY, headers=limited)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert len(mock.requests) == 3  # the refused one never reached the upstream
    free = {"Authorization": "Bearer free-key"}
    assert (
        httpx.post(replicas[0].base_url + "/chat/completions", json=BODY, headers=free).status_code
        == 200
    )


def test_requests_over_the_concurrency_cap_get_503_at_once(make_proxy, mock):
    proxy = make_proxy(max_concurrent_requests=2)
    slow = {**BODY, "stream": True, "mock": {"chunks": 10, "gap_ms": 100}}
    done: list[int] = []
    threads = [
        threading.Thread(
            target=lambda: done.append(
                httpx.post(proxy.base_url + "/chat/completions", json=slow).status_code
            )
        )
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 5
    while len(mock.requests) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    refused = httpx.post(proxy.base_url + "/chat/completions", json=BODY)
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "server_overloaded"
    for thread in threads:
        thread.join(10)
    assert done == [200, 200]
    assert httpx.post(proxy.base_url + "/chat/completions", json=BODY).status_code == 200
    # The gate is left once the response has ended, a moment after the caller has it.
    assert wait_for(lambda: proxy.state.concurrency.active == 0)
