"""Header injection in the engine's X-* headers and in credentials.

Values the HTTP parser lets through (high latin-1 bytes, UTF-8, spaces, 10 KB) reach
``CallContext``. A header that scopes state (task, request or app id) with such a value
is refused with a 400 ``invalid_request_error`` (never a stateless answer); other
headers (user, room) drop it and the request is served. Either way the value is never
stored (Redis keys, task record), logged, forwarded or echoed. Values with control
characters, bare CR / LF or folding are refused by the HTTP parser (400).
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.hostile.conftest import (
    admin_client,
    module_proxy,
    raw_request,
    raw_status,
    redis_keys,
)
from tests.servers import ProxyServer

BODY = b'{"model": "m", "messages": [{"role": "user", "content": "hello"}]}'
SAFE = re.compile(rb"[\x21-\x7e]{1,330}")  # task keys: "<app id>:<task id>", 64 + 1 + 256
SCOPING = {"X-Task-Id", "X-Request-Id", "X-Rquest-Id", "X-Sdk-App-Id"}
ID = re.compile(rb"[\x21-\x7e]{1,256}")
APP_ID = re.compile(rb"[A-Za-z0-9_.-]{1,64}")

# What the HTTP parser passes on: served, the value dropped.
PASSED_ON = {
    "latin1-byte": b"ab\xffcd",
    "utf8": "任务-タスク".encode(),
    "space-inside": b"task id",
    "tab-inside": b"task\tid",
    "129-chars": b"t" * 129,
    "10-kb": b"t" * 10_240,
}
# What the HTTP parser refuses outright.
REFUSED = {
    "nul": b"ab\x00cd",
    "control": b"ab\x01cd",
    "escape-sequence": b"\x1b[31mforged",
    "delete": b"ab\x7fcd",
    "bare-lf": b"abc\nX-Injected: forged",
    "bare-cr": b"abc\rX-Injected: forged",
    "folded": b"abc\r\n X-Injected: forged",
}
FIELDS = {
    "X-Task-Id": "task_id",
    "X-Request-Id": "request_id",
    "X-Rquest-Id": "request_id",
    "X-Sdk-App-Id": "app_id",
    "X-User-Id": "user_id",
    "X-Room-Id": "room_id",
}


@pytest.fixture(scope="module")
def proxy(upstream: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyServer]:
    with module_proxy(upstream, tmp_path_factory.mktemp("headers")) as server:
        yield server


def send(
    proxy: ProxyServer,
    headers: list[tuple[bytes, bytes]],
    path: bytes = b"/v1/chat/completions",
    method: bytes = b"POST",
) -> bytes:
    body = BODY if method == b"POST" else b""
    head = method + b" " + path + b" HTTP/1.1\r\nHost: proxy\r\n"
    head += b"Connection: close\r\nContent-Type: application/json\r\n"
    head += b"".join(name + b": " + value + b"\r\n" for name, value in headers)
    head += b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
    return raw_request(proxy.port, head, body)


def leaked(value: bytes, text: str) -> bool:
    odd = value.decode("latin-1")
    return odd in text or "forged" in text or "X-Injected" in text


def assert_not_logged(caplog: pytest.LogCaptureFixture, value: bytes) -> None:
    for record in caplog.records:
        texts = [record.getMessage(), *(str(v) for v in vars(record).values())]
        assert not any(leaked(value, text) for text in texts), record.getMessage()


@pytest.mark.parametrize("value", PASSED_ON.values(), ids=PASSED_ON.keys())
@pytest.mark.parametrize("header", FIELDS.keys())
def test_unsafe_values_are_refused_or_dropped_never_kept(proxy, mock, caplog, header, value):
    task_id = f"hostile-{uuid.uuid4().hex[:10]}"
    headers = [(header.encode(), value)]
    if header != "X-Task-Id":
        headers.append((b"X-Task-Id", task_id.encode()))
    proxy.drain()  # an earlier case's valid id (129 't's) is written now, not in this capture
    with caplog.at_level(logging.DEBUG):
        response = send(proxy, headers)
    valid = (APP_ID if header == "X-Sdk-App-Id" else ID).fullmatch(value)
    if header in SCOPING and not valid:  # a scoping id is refused, never dropped
        assert raw_status(response) == 400, response[:300]
        assert b'"invalid_request_error"' in response
        assert mock.requests == []
        assert all(SAFE.fullmatch(key) for key in redis_keys(proxy)), redis_keys(proxy)
        assert_not_logged(caplog, value)
        return
    if header in SCOPING:  # a valid id (up to 256 characters): kept as it is
        assert raw_status(response) == 200, response[:300]
        return
    assert raw_status(response) == 200, response[:300]
    head, _, body = response.partition(b"\r\n\r\n")
    assert not leaked(value, head.decode("latin-1"))  # nothing echoed in the response
    assert b'"chat.completion"' in body

    (upstream_request,) = mock.requests
    assert not any(leaked(value, f"{k}: {v}") for k, v in upstream_request.headers.items())
    assert not any(name.lower().startswith("x-") for name in upstream_request.headers)
    assert all(SAFE.fullmatch(key) for key in redis_keys(proxy)), redis_keys(proxy)
    assert_not_logged(caplog, value)

    with admin_client(proxy) as admin:
        tasks = admin.get("/admin/tasks", params={"limit": 500}).json()["items"]
        for task in tasks:
            for field in ("task_id", "app_id", "room_id", "user_id"):
                assert task[field] is None or SAFE.fullmatch(task[field].encode()), task
        if header == "X-Task-Id":
            return  # dropped: the request was stateless
        view = admin.get(f"/admin/tasks/{task_id}").json()
    # The task id was fine: the turn is kept, without the unsafe value.
    assert [m["role"] for m in view["messages"]] == ["user", "assistant"]
    assert all(m["request_id"] is None for m in view["messages"])
    if FIELDS[header] in ("app_id", "user_id", "room_id"):
        assert view["task"] is not None and view["task"][FIELDS[header]] is None


@pytest.mark.parametrize("value", REFUSED.values(), ids=REFUSED.keys())
@pytest.mark.parametrize("header", ["X-Task-Id", "X-Request-Id", "Authorization"])
def test_control_characters_are_refused_by_the_http_layer(proxy, mock, caplog, header, value):
    with caplog.at_level(logging.DEBUG):
        response = send(proxy, [(header.encode(), value), (b"X-Task-Id", b"hostile-refused")])
    assert raw_status(response) == 400, response[:300]
    assert not leaked(value, response.decode("latin-1"))
    assert mock.requests == []
    assert_not_logged(caplog, value)


def test_a_task_id_of_128_printable_characters_is_kept(proxy, mock):
    task_id = "t" * 120 + uuid.uuid4().hex[:8]
    assert raw_status(send(proxy, [(b"X-Task-Id", task_id.encode())])) == 200
    with admin_client(proxy) as admin:
        assert admin.get(f"/admin/tasks/{task_id}").json()["total_messages"] == 2


# Credentials.

ODD_CREDENTIALS = [
    b"",
    b"Bearer",
    b"Bearer ",
    b"Basic dXNlcjpwYXNz",
    b"Bearer " + b"k" * 10_240,
    b"Bearer key-one\xff",
    "Bearer ключ".encode(),
    b"Bearer key-one extra",
    b"bearer  key-onf",
]


@pytest.fixture(scope="module")
def keyed(upstream: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyServer]:
    directory = tmp_path_factory.mktemp("keyed")
    with module_proxy(upstream, directory, api_keys="key-one,key-two") as server:
        yield server


@pytest.mark.parametrize("value", ODD_CREDENTIALS)
def test_odd_credentials_are_401(keyed, mock, value):
    headers = [(b"Authorization", value)] if value else []
    response = send(keyed, headers)
    assert raw_status(response) == 401, response[:300]
    assert b'"authentication_error"' in response
    assert mock.requests == []
    admin = send(keyed, headers, path=b"/admin/tasks", method=b"GET")
    assert raw_status(admin) == 401, admin[:300]


@pytest.mark.parametrize("value", ODD_CREDENTIALS)
def test_odd_admin_tokens_are_401(proxy, value):
    headers = [(b"Authorization", value)] if value else []
    response = send(proxy, headers, path=b"/admin/tasks", method=b"GET")
    assert raw_status(response) == 401, response[:300]
    assert b'"authentication_error"' in response


def test_printable_look_alikes_are_kept_as_plain_text(proxy, mock):
    """Percent-encoded CRLF is printable ASCII: a harmless literal, stored as given."""
    task_id = f"%0d%0aX-Injected:%20{uuid.uuid4().hex[:8]}"
    assert raw_status(send(proxy, [(b"X-Task-Id", task_id.encode())])) == 200
    with admin_client(proxy) as admin:
        view = admin.get("/admin/tasks/" + task_id.replace("%", "%25"))
    assert view.status_code == 200 and view.json()["task_id"] == task_id
