"""Hostile chat bodies against a real proxy: a clear 4xx envelope, nothing forwarded,
nothing written to the task's history. Fields the proxy only forwards (sampling
parameters, tools, ...) may be refused by the upstream, but never crash the proxy."""

from __future__ import annotations

import json
import logging
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from tests.hostile.conftest import (
    ADMIN,
    admin_client,
    assert_envelope,
    assert_no_server_error,
    module_proxy,
    raw_request,
    raw_status,
)
from tests.servers import ProxyServer

LIMIT = 256 * 1024  # room for 100k nested arrays (200 KB), small enough to exceed quickly
USER = {"role": "user", "content": "hello"}


@pytest.fixture(scope="module")
def proxy(upstream: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyServer]:
    with module_proxy(upstream, tmp_path_factory.mktemp("chat"), max_body_bytes=LIMIT) as server:
        yield server


@pytest.fixture
def admin(proxy: ProxyServer) -> Iterator[httpx.Client]:
    with admin_client(proxy) as client:
        yield client


def chat(
    proxy: ProxyServer, body: Any, task_id: str | None = None, **headers: str
) -> httpx.Response:
    # The standard library writes integers of any size (orjson stops at 64 bits).
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    sent = {"content-type": "application/json", **headers}
    if task_id is not None:
        sent["X-Task-Id"] = task_id
        sent.setdefault("X-Request-Id", uuid.uuid4().hex)
    return httpx.post(proxy.base_url + "/chat/completions", content=raw, headers=sent, timeout=15)


@pytest.fixture
def task(proxy: ProxyServer, admin: httpx.Client, mock: Any) -> Iterator[tuple[str, dict]]:
    """A task with one finished turn; yields its id and the admin view of it."""
    task_id = f"hostile-{uuid.uuid4().hex[:10]}"
    response = chat(proxy, {"model": "m", "messages": [USER]}, task_id)
    assert response.status_code == 200, response.text
    before = admin.get(f"/admin/tasks/{task_id}")
    assert before.status_code == 200 and before.json()["total_messages"] == 2, before.text
    mock.clear()
    yield task_id, before.json()


def assert_untouched(admin: httpx.Client, mock: Any, task: tuple[str, dict]) -> None:
    task_id, before = task
    assert mock.requests == []  # nothing reached the upstream
    after = admin.get(f"/admin/tasks/{task_id}")
    assert after.status_code == 200, after.text
    assert after.json() == before  # live history, task record and transcript unchanged


def body_with(**fields: Any) -> dict[str, Any]:
    """A valid body with fields replaced (``_MISSING`` removes one)."""
    body: dict[str, Any] = {"model": "m", "messages": [USER]}
    for name, value in fields.items():
        if value is _MISSING:
            body.pop(name, None)
        else:
            body[name] = value
    return body


_MISSING = object()
VALID = orjson.dumps(body_with())

NOT_JSON = {
    "empty": b"",
    "blank": b"  \n\t ",
    "truncated": VALID[:-3],
    "not-json": b"{not json",
    "trailing-garbage": VALID + b" x",
    "two-objects": VALID + VALID,
    "invalid-utf8": b'{"model": "m\xff", "messages": [{"role": "user", "content": "hi"}]}',
    "overlong-utf8": b'{"model": "\xc0\xaf", "messages": [{"role": "user", "content": "hi"}]}',
    "utf8-surrogate": b'{"model": "m", "messages": [{"role": "user", "content": "\xed\xa0\x80"}]}',
    "escaped-lone-surrogate": b'{"model": "m", "messages": [{"role": "user", "content": "\\ud800"}]'
    b"}",
    "raw-control-char": b'{"model": "m\x00", "messages": [{"role": "user", "content": "hi"}]}',
    "utf16": VALID.decode().encode("utf-16"),
    "bom": b"\xef\xbb\xbf" + VALID,
    "nan": b'{"model": "m", "temperature": NaN, "messages": [{"role": "user", "content": "x"}]}',
    "infinity": b'{"model": "m", "temperature": 1e999, "messages": [{"role": "user", "content": "x"'
    b"}]}",
    "single-quotes": b"{'model': 'm'}",
    "top-level-array": b"[]",
    "top-level-string": b'"hello"',
    "top-level-number": b"42",
    "top-level-null": b"null",
    "top-level-true": b"true",
    "deep-arrays-in-field": VALID[:-1] + b', "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "deep-objects-in-content": b'{"model": "m", "messages": [{"role": "user", "content": '
    + b'{"a":' * 30_000
    + b"1"
    + b"}" * 30_000
    + b"}]}",
    "deep-unclosed": b"[" * 200_000,
}


@pytest.mark.parametrize("raw", NOT_JSON.values(), ids=NOT_JSON.keys())
def test_bodies_that_are_not_a_json_object_are_400(admin, mock, task, proxy, raw):
    assert_envelope(chat(proxy, raw, task[0]), 400)
    assert_untouched(admin, mock, task)


WRONG_FIELDS: dict[str, tuple[dict[str, Any], str]] = {
    "model-missing": (body_with(model=_MISSING), "model"),
    "model-null": (body_with(model=None), "model"),
    "model-empty": (body_with(model=""), "model"),
    "model-number": (body_with(model=5), "model"),
    "model-array": (body_with(model=["m"]), "model"),
    "model-object": (body_with(model={"id": "m"}), "model"),
    "model-bool": (body_with(model=True), "model"),
    "messages-missing": (body_with(messages=_MISSING), "messages"),
    "messages-null": (body_with(messages=None), "messages"),
    "messages-empty": (body_with(messages=[]), "messages"),
    "messages-string": (body_with(messages="hello"), "messages"),
    "messages-object": (body_with(messages=USER), "messages"),
    "messages-number": (body_with(messages=1), "messages"),
    "stream-string": (body_with(stream="true"), "stream"),
    "stream-number": (body_with(stream=1), "stream"),
    "stream-null": (body_with(stream=None), "stream"),
    "stream-object": (body_with(stream={}), "stream"),
    "stream_options-string": (body_with(stream=True, stream_options="yes"), "stream_options"),
    "stream_options-array": (body_with(stream=True, stream_options=[]), "stream_options"),
    "stream_options-number": (body_with(stream=True, stream_options=1), "stream_options"),
    "profile-number": (body_with(profile=5), "profile"),
    "profile-object": (body_with(profile={"name": "x"}), "profile"),
}


@pytest.mark.parametrize(("body", "param"), WRONG_FIELDS.values(), ids=WRONG_FIELDS.keys())
def test_wrong_types_in_fields_the_proxy_reads_are_400(admin, mock, task, proxy, body, param):
    error = assert_envelope(chat(proxy, body, task[0]), 400)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert_untouched(admin, mock, task)


WRONG_MESSAGES: dict[str, tuple[Any, str]] = {
    "string": ("hello", "messages.0"),
    "number": (5, "messages.0"),
    "null": (None, "messages.0"),
    "array": ([USER], "messages.0"),
    "bool": (True, "messages.0"),
    "no-role": ({"content": "hi"}, "messages.0.role"),
    "role-null": ({"role": None, "content": "hi"}, "messages.0.role"),
    "role-number": ({"role": 1, "content": "hi"}, "messages.0.role"),
    "role-array": ({"role": ["user"], "content": "hi"}, "messages.0.role"),
    "role-object": ({"role": {"user": 1}, "content": "hi"}, "messages.0.role"),
    "role-unknown": ({"role": "wizard", "content": "hi"}, "messages.0.role"),
    "role-upper-case": ({"role": "USER", "content": "hi"}, "messages.0.role"),
    "content-number": ({"role": "user", "content": 5}, "messages.0.content"),
    "content-bool": ({"role": "user", "content": False}, "messages.0.content"),
    "content-object": ({"role": "user", "content": {"text": "hi"}}, "messages.0.content"),
    "name-number": ({"role": "user", "content": "hi", "name": 5}, "messages.0.name"),
    "name-array": ({"role": "user", "content": "hi", "name": ["a"]}, "messages.0.name"),
    "tool_call_id-number": (
        {"role": "tool", "content": "42", "tool_call_id": 7},
        "messages.0.tool_call_id",
    ),
    "tool_call_id-object": (
        {"role": "tool", "content": "42", "tool_call_id": {}},
        "messages.0.tool_call_id",
    ),
    "tool_calls-string": (
        {"role": "assistant", "content": None, "tool_calls": "call"},
        "messages.0.tool_calls",
    ),
    "tool_calls-number": (
        {"role": "assistant", "content": None, "tool_calls": 5},
        "messages.0.tool_calls",
    ),
    "tool_calls-object": (
        {"role": "assistant", "content": None, "tool_calls": {"id": "c"}},
        "messages.0.tool_calls",
    ),
    "tool_calls-item-string": (
        {"role": "assistant", "content": None, "tool_calls": ["c"]},
        "messages.0.tool_calls.0",
    ),
    "tool_calls-function-string": (
        {"role": "assistant", "content": None, "tool_calls": [{"function": "f"}]},
        "messages.0.tool_calls.0.function",
    ),
}


@pytest.mark.parametrize(("message", "param"), WRONG_MESSAGES.values(), ids=WRONG_MESSAGES.keys())
@pytest.mark.parametrize("position", ["first", "last"])
def test_messages_of_every_wrong_shape_are_400(admin, mock, task, proxy, message, param, position):
    if position == "first":
        messages = [message, USER]
    else:  # after an earlier round, where the proxy would seed or match history
        messages = [USER, {"role": "assistant", "content": "hi"}, message]
        param = param.replace("messages.0", "messages.2", 1)
    for stream in (False, True):
        body = body_with(messages=messages, stream=stream)
        error = assert_envelope(chat(proxy, body, task[0]), 400)
        assert error["param"] == param
    assert_untouched(admin, mock, task)


FORWARDED: dict[str, dict[str, Any]] = {
    "max_tokens-string": {"max_tokens": "lots"},
    "max_tokens-negative": {"max_tokens": -1},
    "max_tokens-huge": {"max_tokens": 10**30},
    "max_tokens-float": {"max_tokens": 1e308},
    "n-huge": {"n": 10**9},
    "n-string": {"n": "two"},
    "n-zero": {"n": 0},
    "temperature-string": {"temperature": "hot"},
    "temperature-huge": {"temperature": 1e308},
    "tools-string": {"tools": "all of them"},
    "tools-numbers": {"tools": [1, 2]},
    "tools-object": {"tools": {"type": "function"}},
    "tool_choice-number": {"tool_choice": 5},
    "response_format-string": {"response_format": "json"},
    "stop-number": {"stop": 5},
    "logit_bias-array": {"logit_bias": [1]},
    "user-object": {"user": {"id": 1}},
    "seed-float": {"seed": 1.5},
    "metainfo-string": {"MetaInfo": "x"},
    "many-unknown-fields": {f"field_{i}": i for i in range(2000)},
    "stream_options-odd-values": {"stream_options": {"include_usage": "yes", "x": [1]}},
    "content-parts-odd": {
        "messages": [{"role": "user", "content": [1, "x", {"type": "text", "text": 5}, {}]}]
    },
    "content-empty-list": {"messages": [{"role": "user", "content": []}]},
    "content-null": {"messages": [{"role": "user", "content": None}]},
    "unicode-content": {"messages": [{"role": "user", "content": "é\u0301\u200b\U0001f600\x00"}]},
}


@pytest.mark.parametrize("fields", FORWARDED.values(), ids=FORWARDED.keys())
@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_fields_the_proxy_forwards_never_crash_it(admin, proxy, mock, fields, stream):
    task_id = f"hostile-{uuid.uuid4().hex[:10]}"
    response = chat(proxy, {**body_with(stream=stream), **fields}, task_id)
    assert_no_server_error(response)
    if response.status_code == 200 and not stream:
        assert response.json()["object"] == "chat.completion"
    if response.status_code == 200 and stream:
        assert response.text.rstrip().endswith("data: [DONE]")
        assert '"internal error"' not in response.text
    view = admin.get(f"/admin/tasks/{task_id}")
    assert view.status_code in (200, 404), view.text  # the task view reads back whatever was kept
    if response.status_code != 200:
        assert view.status_code == 404 or view.json()["total_messages"] == 0


# Size limits.


def test_a_body_over_the_limit_is_413(admin, mock, task, proxy):
    big = body_with(messages=[{"role": "user", "content": "x" * (LIMIT + 1)}])
    assert assert_envelope(chat(proxy, big, task[0]), 413)["code"] == "body_too_large"
    assert_untouched(admin, mock, task)


def test_a_chunked_body_over_the_limit_is_413(admin, mock, task, proxy):
    def chunks() -> Iterator[bytes]:
        yield b'{"model": "m", "messages": [{"role": "user", "content": "'
        for _ in range(LIMIT // 8192 + 2):
            yield b"x" * 8192
        yield b'"}]}'

    response = httpx.post(
        proxy.base_url + "/chat/completions",
        content=chunks(),  # no Content-Length: Transfer-Encoding: chunked
        headers={"content-type": "application/json", "X-Task-Id": task[0]},
        timeout=15,
    )
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert_envelope(response, 413)
    assert_untouched(admin, mock, task)


def test_a_chunked_body_under_the_limit_is_served(proxy, mock):
    def chunks() -> Iterator[bytes]:
        yield VALID[:10]
        yield VALID[10:]

    response = httpx.post(
        proxy.base_url + "/chat/completions",
        content=chunks(),
        headers={"content-type": "application/json"},
        timeout=15,
    )
    assert response.status_code == 200, response.text
    assert len(mock.requests) == 1


def test_a_declared_length_over_the_limit_is_refused_before_the_body(admin, mock, task, proxy):
    """The server answers 413 without waiting for a body it would refuse anyway."""
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: proxy\r\nConnection: close\r\n"
        b"Content-Type: application/json\r\nX-Task-Id: " + task[0].encode() + b"\r\n"
        b"Content-Length: 99999999999\r\n\r\n"
    )
    response = raw_request(proxy.port, head, b"{", timeout=5)
    assert raw_status(response) == 413
    assert b'"body_too_large"' in response
    assert_untouched(admin, mock, task)


@pytest.mark.parametrize("length", [b"abc", b"-1", b"1e3", b"0x10", "\u00b2".encode("latin-1")])
def test_a_malformed_content_length_is_400(proxy, mock, length):
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: proxy\r\nConnection: close\r\n"
        b"Content-Type: application/json\r\nContent-Length: " + length + b"\r\n\r\n"
    )
    response = raw_request(proxy.port, head, VALID, timeout=5)
    assert raw_status(response) == 400  # refused by the HTTP parser or by the proxy
    assert mock.requests == []


def test_a_client_leaving_mid_body_is_not_an_internal_error(
    proxy, mock, caplog: pytest.LogCaptureFixture
):
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: proxy\r\n"
        b"Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n"
    )
    with caplog.at_level(logging.INFO):
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
            sock.sendall(head + VALID[:20])
            time.sleep(0.1)  # the proxy is reading the body when the caller leaves
        time.sleep(0.2)
        # The next request on a fresh connection is served: the proxy is fine.
        assert httpx.post(proxy.base_url + "/chat/completions", content=VALID).status_code == 200
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]
    assert len(mock.requests) == 1


def test_one_message_up_to_the_limit_is_kept_whole(admin, proxy, mock):
    """A long (but allowed) turn is stored as sent: nothing cut, nothing half-written."""
    task_id = f"hostile-{uuid.uuid4().hex[:10]}"
    content = "word " * ((LIMIT - 1024) // 5)
    response = chat(proxy, body_with(messages=[{"role": "user", "content": content}]), task_id)
    assert_no_server_error(response)
    view = admin.get(f"/admin/tasks/{task_id}").json()
    if response.status_code == 200:
        assert [m["role"] for m in view["messages"]] == ["user", "assistant"]
        assert view["messages"][0]["content"] == content
    else:
        assert view["total_messages"] == 0


def test_wrong_methods_and_paths_get_envelopes(proxy):
    assert_envelope(httpx.get(proxy.base_url + "/chat/completions"), 405)
    assert_envelope(httpx.put(proxy.base_url + "/chat/completions", content=VALID), 405)
    assert_envelope(httpx.post(proxy.base_url + "/chat/completion", content=VALID), 404)
    assert_envelope(httpx.get(proxy.url + "/v1/../../etc/passwd"), 404)


def test_a_nul_in_content_reaches_the_durable_transcript_on_postgresql(make_proxy, postgres_url):
    from proxy.db.migrate import upgrade

    upgrade(postgres_url)
    proxy = make_proxy(redis=True, admin_token=ADMIN, database_url=postgres_url)
    task_id = f"hostile-{uuid.uuid4().hex[:10]}"
    body = body_with(messages=[{"role": "user", "content": "a\x00b"}])
    assert chat(proxy, body, task_id).status_code == 200
    with admin_client(proxy) as admin:
        view = admin.get(f"/admin/tasks/{task_id}").json()
    assert view["total_messages"] == 2
    assert [m["role"] for m in view["transcript"]] == ["user", "assistant"]
