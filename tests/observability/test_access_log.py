"""Every response carries x-request-id; one JSON access-log line per request, no key."""

from __future__ import annotations

import logging
import re
import time

import httpx

from proxy.logs import JsonFormatter

KEY = "chat-key-for-access-log-0123456789"


def test_request_ids_and_one_access_line_per_request(make_proxy, mock, caplog):
    caplog.set_level(logging.INFO, logger="proxy.access")
    proxy = make_proxy(api_keys=[KEY])
    auth = {"Authorization": f"Bearer {KEY}"}
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    engine = httpx.post(
        proxy.base_url + "/chat/completions",
        json=body,
        headers={**auth, "X-Task-Id": "t-1", "X-Rquest-Id": "engine-id-1", "X-Sdk-App-Id": "7"},
    )
    plain = httpx.get(proxy.url + "/healthz")
    refused = httpx.post(proxy.base_url + "/chat/completions", json=body)
    hostile = httpx.get(proxy.url + "/healthz", headers={"X-Request-Id": "a b\tc"})
    assert engine.headers["x-request-id"] == "engine-id-1"  # the engine's (misspelt) header
    for generated in (plain, refused, hostile):
        assert re.fullmatch(r"[0-9a-f]{32}", generated.headers["x-request-id"])
    assert len({r.headers["x-request-id"] for r in (plain, refused, hostile)}) == 3

    # A line is written once its response has gone out: the client may be faster.
    deadline = time.monotonic() + 5
    while len([r for r in caplog.records if r.name == "proxy.access"]) < 4:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    lines = [JsonFormatter().format(r) for r in caplog.records if r.name == "proxy.access"]
    assert len(lines) == 4
    assert all(KEY not in line for line in lines)
    records = [r for r in caplog.records if r.name == "proxy.access"]
    chat, health, unauthorised, _ = records
    assert (chat.method, chat.path, chat.status) == ("POST", "/v1/chat/completions", 200)
    assert (chat.task_id, chat.app_id, chat.request_id) == ("t-1", "7", "engine-id-1")
    assert chat.key_name == "env key" and chat.duration_ms > 0
    assert (health.path, health.status, health.request_id) == (
        "/healthz",
        200,
        plain.headers["x-request-id"],
    )
    assert unauthorised.status == 401 and not hasattr(unauthorised, "key_name")


def test_every_stateful_turn_is_kept_in_the_turn_log(make_proxy, mock):
    """The access middleware hands each chat turn of a task to the turn-log writer (the
    console's timeline); a turn without a task has no timeline."""
    proxy = make_proxy()
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    for headers in ({"X-Task-Id": "t-log"}, {"X-Task-Id": "t-log"}, {}):
        reply = httpx.post(proxy.base_url + "/chat/completions", json=body, headers=headers)
        assert reply.status_code == 200
    writer = proxy.state.turn_logs
    deadline = time.monotonic() + 10
    while writer.written < 2:
        assert time.monotonic() < deadline, "the turns never reached the turn log"
        time.sleep(0.05)
    time.sleep(0.2)  # nothing else arrives
    assert writer.written == 2 and writer.failed_writes == 0
