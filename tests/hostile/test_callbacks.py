"""Forged, replayed and malformed engine callbacks on /callbacks/trtc.

A callback changes state only with a valid ``Sign`` (HMAC-SHA256 of the raw body);
a replay of a valid one is acknowledged (the engine retries) and changes nothing;
a signed but malformed one is a 400, never a 500 and never a half-applied event.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from proxy.db.base import without_nul
from proxy.voice.signing import sign
from tests.context.engine_calls import APP_ID, task_key
from tests.hostile.conftest import ADMIN, admin_client, assert_envelope, module_proxy, raw_request
from tests.servers import ProxyServer

KEY = "callback-key-for-hostile-tests"


@pytest.fixture(scope="module")
def proxy(upstream: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyServer]:
    directory = tmp_path_factory.mktemp("callbacks")
    with module_proxy(
        upstream, directory, callback_sign_key=KEY, spoken_grace_seconds=0.3
    ) as server:
        yield server


@pytest.fixture
def admin(proxy: ProxyServer) -> Iterator[httpx.Client]:
    with admin_client(proxy) as client:
        yield client


def event(event_type: int, task_id: str, payload: dict[str, Any], **info: Any) -> bytes:
    body = {
        "EventGroupId": 9,
        "EventType": event_type,
        "CallbackTs": 1687770730166,
        "EventInfo": {
            "EventMsTs": int(time.time() * 1000),
            "TaskId": task_id,
            "RoomId": "1234",
            "RoomIdType": 0,
            "Payload": payload,
            **info,
        },
    }
    return json.dumps(body).encode()


def post(proxy: ProxyServer, raw: bytes, signature: str | None) -> httpx.Response:
    headers = {"Content-Type": "application/json", "SdkAppId": APP_ID}
    if signature is not None:
        headers["Sign"] = signature
    return httpx.post(proxy.url + "/callbacks/trtc", content=raw, headers=headers, timeout=10)


def new_task() -> str:
    return f"hostile-{uuid.uuid4().hex[:10]}"


def settled_view(admin: httpx.Client, task_id: str) -> dict[str, Any]:
    """The task as the admin API shows it, once background writes have landed."""
    time.sleep(0.3)
    view = {}
    for part, suffix in [("task", ""), ("events", "/events"), ("metrics", "/metrics")]:
        response = admin.get(f"/admin/tasks/{task_key(task_id)}{suffix}")
        assert response.status_code == 200, (part, response.text)
        view[part] = response.json()
    return view


def forged_signatures(raw: bytes) -> dict[str, str | None]:
    good = sign(KEY, raw)
    digest = base64.b64decode(good)
    return {
        "missing": None,
        "empty": "",
        "other-key": sign("not-the-key", raw),
        "other-body": sign(KEY, raw + b" "),
        "flipped-bit": base64.b64encode(bytes([digest[0] ^ 1]) + digest[1:]).decode(),
        "truncated": good[:-4],
        "doubled": good + good,
        "hex-instead-of-base64": digest.hex(),
        "not-base64": "!!!!",
        "long": "A" * 10_240,
        "prefixed": "sha256=" + good,
    }


@pytest.mark.parametrize("case", list(forged_signatures(b"x")))
def test_forged_signatures_are_401_and_change_nothing(proxy, admin, case):
    task_id = new_task()
    raw = event(901, task_id, {"Status": 0})
    signature = forged_signatures(raw)[case]
    error = assert_envelope(post(proxy, raw, signature), 401)
    assert error["code"] == "invalid_signature"
    assert admin.get(f"/admin/tasks/{task_key(task_id)}/events").json() == []
    assert_envelope(admin.get(f"/admin/tasks/{task_key(task_id)}"), 404)


def test_a_non_ascii_signature_header_is_401(proxy, admin):
    task_id = new_task()
    raw = event(901, task_id, {"Status": 0})
    head = (
        b"POST /callbacks/trtc HTTP/1.1\r\nHost: proxy\r\nConnection: close\r\n"
        b"Content-Type: application/json\r\nSign: \xff\xfe" + sign(KEY, raw).encode() + b"\r\n"
        b"Content-Length: " + str(len(raw)).encode() + b"\r\n\r\n"
    )
    response = raw_request(proxy.port, head, raw)
    assert response.startswith(b"HTTP/1.1 401"), response[:200]
    assert admin.get(f"/admin/tasks/{task_key(task_id)}/events").json() == []


def test_a_replayed_callback_is_acknowledged_once_and_changes_nothing(proxy, admin, mock):
    task_id = new_task()
    reply = "Kyoto has many temples. It was the capital."
    mock.script([{"reply": reply}])
    turn = httpx.post(
        proxy.base_url + "/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": "Kyoto?"}]},
        headers={"X-Task-Id": task_id, "X-Request-Id": "r1", "X-Sdk-App-Id": APP_ID},
    )
    assert turn.status_code == 200, turn.text
    spoken = event(905, task_id, {"UserId": "bot", "RoundId": "r1", "Text": "Kyoto has many"})
    signature = sign(KEY, spoken)
    assert post(proxy, spoken, signature).json() == {"code": 0}
    first = settled_view(admin, task_id)
    messages = first["task"]["messages"]
    assert (messages[-1]["content"], messages[-1]["interrupted"]) == ("Kyoto has many", True)
    assert len(first["events"]) == 1

    for _ in range(3):  # the engine's retries, or an attacker replaying a captured request
        assert post(proxy, spoken, signature).json() == {"code": 0}
    assert settled_view(admin, task_id) == first
    assert proxy.state.callbacks.duplicates >= 3


def test_a_burst_of_callbacks_and_their_replays_is_stored_once_each(proxy, admin):
    """Concurrent deliveries land in shared batches; a replay never costs another row."""
    task_id = new_task()
    bodies = [
        event(906, task_id, {"Metric": "m", "Value": n, "Tag": {"RoundId": f"r{n}"}}, EventMsTs=n)
        for n in range(1, 31)
    ]
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda raw: post(proxy, raw, sign(KEY, raw)), bodies * 3))
    assert [r.json() for r in replies] == [{"code": 0}] * 90
    deadline = time.monotonic() + 10
    while len(admin.get(f"/admin/tasks/{task_key(task_id)}/events").json()) < 30:
        assert time.monotonic() < deadline, "the events were not written"
        time.sleep(0.05)
    view = settled_view(admin, task_id)
    assert sorted(e["event_ms_ts"] for e in view["events"]) == list(range(1, 31))
    assert sorted(m["value"] for m in view["metrics"]) == list(range(1, 31))


def test_an_oversized_callback_is_413_before_anything_else(proxy):
    raw = event(903, new_task(), {"Text": "x" * (300 * 1024)})
    assert_envelope(post(proxy, raw, sign(KEY, raw)), 413)
    assert_envelope(post(proxy, raw, None), 413)


def _nested(depth: int) -> bytes:
    return b'{"EventType": 903, "EventInfo": ' + b"[" * depth + b"]" * depth + b"}"


SIGNED_MALFORMED = {
    "empty": b"",
    "not-json": b"{not json",
    "invalid-utf8": b'{"EventType": 901, "EventInfo": {"TaskId": "\xff"}}',
    "array": b"[]",
    "string": b'"callback"',
    "no-event-info": b'{"EventType": 901}',
    "event-info-string": b'{"EventType": 901, "EventInfo": "x"}',
    "no-task-id": event(901, "", {"Status": 0}),
    "task-id-number": b'{"EventType": 901, "EventInfo": {"TaskId": 5, "EventMsTs": 1}}',
    "task-id-too-long": event(901, "t" * 257, {"Status": 0}),
    "event-type-text": event(901, "t", {}).replace(b'"EventType": 901', b'"EventType": "x"'),
    "event-type-null": event(901, "t", {}).replace(b'"EventType": 901', b'"EventType": null'),
    "event-type-huge": event(901, "t", {}).replace(b'"EventType": 901', b'"EventType": 1e12'),
    "event-type-negative": event(901, "t", {}).replace(b'"EventType": 901', b'"EventType": -1'),
    "event-ms-text": event(901, "t", {}, EventMsTs="soon"),
    "event-ms-huge": event(901, "t", {}, EventMsTs="9" * 5000),
    "event-ms-beyond-int64": event(901, "t", {}, EventMsTs=2**64),
    "event-ms-beyond-year-9999": event(901, "t", {}, EventMsTs=10**17),
    "event-ms-negative": event(901, "t", {}, EventMsTs=-1),
    "room-type-text": event(901, "t", {}, RoomIdType="x"),
    "room-id-too-long": event(901, "t", {}, RoomId="9" * 129),
    "payload-list": event(901, "t", {}).replace(b'"Payload": {}', b'"Payload": [1]'),
    "deeply-nested": _nested(100_000),
}


@pytest.mark.parametrize("raw", SIGNED_MALFORMED.values(), ids=SIGNED_MALFORMED.keys())
def test_signed_but_malformed_callbacks_are_400(proxy, raw):
    error = assert_envelope(post(proxy, raw, sign(KEY, raw)), 400)
    assert error["type"] == "invalid_request_error"


ODD_BUT_VALID = {
    "unknown-event-type": (777, {"Anything": True}, {}),
    "tag-is-text": (906, {"Metric": "llm_first_token", "Value": 5, "Tag": "r1"}, {}),
    "tag-is-list": (908, {"Metric": "llm_error", "Tag": [1, 2]}, {}),
    "value-is-text": (906, {"Metric": "asr", "Value": "fast", "Tag": {"RoundId": 7}}, {}),
    "text-is-number": (905, {"Text": 42}, {}),
    "text-is-object": (903, {"Text": {"a": 1}, "RoundId": ["r"]}, {}),
    "room-id-object": (901, {}, {"RoomId": {"id": 1}}),
    "unicode-task": (901, {"Status": 0}, {}),
    "long-round-id": (903, {"Text": "hi", "RoundId": "r" * 5000}, {}),
}
# Beyond what PostgreSQL holds (metric is VARCHAR(64); JSONB has no \u0000): the callback
# handler trims them so that they are stored, not acknowledged and then lost.
POSTGRES_LIMITS = {
    "long-metric-name": (906, {"Metric": "m" * 5000, "Value": 1, "Tag": {"RoundId": "r"}}, {}),
    "nul-in-text": (903, {"Text": "a\u0000b", "RoundId": "r"}, {}),
}


@pytest.mark.parametrize(
    ("event_type", "payload", "info"),
    [*ODD_BUT_VALID.values(), *POSTGRES_LIMITS.values()],
    ids=[*ODD_BUT_VALID, *POSTGRES_LIMITS],
)
def test_odd_payloads_are_accepted_and_the_task_stays_readable(
    proxy, admin, event_type, payload, info
):
    check_odd_payload(proxy, admin, event_type, payload, info)


def postgres_proxy(make_proxy: Any, url: str) -> ProxyServer:
    from proxy.db.migrate import upgrade

    upgrade(url)
    return make_proxy(redis=True, admin_token=ADMIN, callback_sign_key=KEY, database_url=url)


def test_odd_payloads_are_stored_on_postgresql(make_proxy, postgres_url):
    """PostgreSQL checks lengths, integer ranges and NUL bytes that SQLite lets through."""
    proxy = postgres_proxy(make_proxy, postgres_url)
    with admin_client(proxy) as admin:
        for event_type, payload, info in ODD_BUT_VALID.values():
            check_odd_payload(proxy, admin, event_type, payload, info)


def test_values_beyond_postgresql_limits_are_still_stored(make_proxy, postgres_url):
    proxy = postgres_proxy(make_proxy, postgres_url)
    with admin_client(proxy) as admin:
        for event_type, payload, info in POSTGRES_LIMITS.values():
            check_odd_payload(proxy, admin, event_type, payload, info)


def check_odd_payload(proxy, admin, event_type, payload, info) -> None:
    task_id = new_task() + ("-任务" if event_type == 901 and not info else "")
    raw = event(event_type, task_id, payload, **info)
    assert post(proxy, raw, sign(KEY, raw)).json() == {"code": 0}
    view = settled_view(admin, task_id)  # none of the three reads may fail
    assert len(view["events"]) == 1, view
    # Stored as sent, except U+0000, which PostgreSQL cannot hold (dropped on every database).
    assert view["events"][0]["payload"] == without_nul(json.loads(raw))
