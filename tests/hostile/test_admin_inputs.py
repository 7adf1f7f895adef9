"""Hostile input to the admin API: odd task ids and path traversal, SSRF in tool URLs,
and knowledge documents that name a URL (ingestion takes content, never fetches)."""

from __future__ import annotations

import http.server
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from proxy.call import MAX_TASK_KEY
from tests.hostile.conftest import (
    ADMIN,
    admin_client,
    assert_envelope,
    module_proxy,
    raw_request,
    raw_status,
)
from tests.servers import ProxyServer


@pytest.fixture(scope="module")
def proxy(upstream: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyServer]:
    with module_proxy(upstream, tmp_path_factory.mktemp("admin")) as server:
        yield server


@pytest.fixture
def admin(proxy: ProxyServer) -> Iterator[httpx.Client]:
    with admin_client(proxy) as client:
        yield client


@pytest.fixture
def db_admin(make_proxy: Any, migrated_database_url: str) -> Iterator[httpx.Client]:
    """On SQLite and on PostgreSQL: the databases differ in what text they refuse."""
    proxy = make_proxy(redis=True, admin_token=ADMIN, database_url=migrated_database_url)
    with admin_client(proxy) as client:
        yield client


# Task ids: (as written in the URL, the id the proxy sees or None when it must refuse it).
ACCEPTED_IDS = {
    "dot-dot": ("%2e%2e", ".."),
    "unicode": ("%E4%BB%BB%E5%8A%A1-%F0%9F%98%80", "任务-😀"),
    "space": ("a%20b", "a b"),
    "percent": ("100%25", "100%"),
    "quotes": ("%22%27%3B--", "\"';--"),
    "128-chars": ("t" * 128, "t" * 128),
    "193-chars": ("t" * 193, "t" * 193),  # the longest task key
    "latin1-looking": ("%C3%BF", "ÿ"),
}
REFUSED_IDS = {
    "nul": "a%00b",
    "crlf": "a%0D%0AX-Injected:%20forged",
    "newline-at-end": "abc%0A",
    "escape": "%1B%5B31m",
    "delete": "a%7F",
    "too-long": "t" * (MAX_TASK_KEY + 1),  # longer than any task key ("<app>:<task>")
    "10-kb": "t" * 10_240,
}
OPERATIONS = [
    ("GET", "", None),
    ("GET", "/events", None),
    ("GET", "/metrics", None),
    ("POST", "/reset", None),
    ("POST", "/messages", {"content": "The caller is a VIP."}),
    ("POST", "/metainfo", {"metainfo": {"card": "vip"}}),
    ("DELETE", "", None),
]


def test_task_ids_no_task_could_have_are_422(db_admin):
    for name, raw in REFUSED_IDS.items():
        for method, suffix, body in OPERATIONS:
            response = db_admin.request(method, f"/admin/tasks/{raw}{suffix}", json=body)
            error = assert_envelope(response, 422)
            assert error["param"] == "task_id", (name, method, suffix, error)


def test_odd_but_valid_task_ids_work_end_to_end(db_admin):
    app = {"app_id": "app-1"}  # a task with no turn yet is named with its app
    for name, (raw, task_id) in ACCEPTED_IDS.items():
        path = f"/admin/tasks/{raw}"
        assert_envelope(db_admin.get(path), 404)
        assert_envelope(db_admin.post(path + "/metainfo", json={"metainfo": {"a": 1}}), 404)
        assert db_admin.get(path + "/events", params=app).json() == [], name
        assert db_admin.get(path + "/metrics", params=app).json() == [], name
        assert db_admin.post(path + "/reset", params=app).status_code == 204, name
        added = db_admin.post(
            path + "/messages", params=app, json={"content": "The caller is a VIP."}
        )
        assert added.status_code == 201, (name, added.text)
        queued = db_admin.post(path + "/metainfo", params=app, json={"metainfo": {"a": 1}})
        assert queued.status_code == 202
        view = db_admin.get(path)  # the bare id now finds the one app that has it
        assert view.status_code == 200, (name, view.text)
        assert view.json()["task_id"] == f"app-1:{task_id}"
        assert [m["content"] for m in view.json()["messages"]] == ["The caller is a VIP."]
        transcript = view.json()["transcript"]  # the durable copy kept the message too
        assert [m["content"] for m in transcript] == ["The caller is a VIP."], name
        assert db_admin.delete(path).status_code == 204, name
        assert_envelope(db_admin.get(path), 404)


NUL_BODIES = [
    ("POST", "/admin/keys", {"name": "key\x00"}),
    ("POST", "/admin/profiles", {"name": "p", "system_prompt": "Be kind.\x00"}),
    ("POST", "/admin/profiles", {"name": "p", "filler_phrases": ["One moment\x00"]}),
    ("PUT", "/admin/routes/r", {"targets": [{"base_url": "https://x.example", "model": "m\x00"}]}),
    ("POST", "/admin/tools", {"name": "t", "description": "d\x00", "url": "https://x.example"}),
    ("POST", "/admin/tasks/t/messages?app_id=app-1", {"content": "The caller\x00 is a VIP."}),
    ("POST", "/admin/knowledge-bases", {"name": "kb2", "description": "d\x00"}),
    ("POST", "/admin/knowledge-bases/kb/documents", {"source_id": "d", "content": "a\x00b"}),
    ("POST", "/admin/knowledge-bases/kb/documents", {"source_id": "d\x00", "content": "ab"}),
]


def test_nul_characters_in_admin_bodies_are_refused_not_a_database_outage(db_admin):
    """PostgreSQL stores no NUL in text or JSONB: that is a 422, never a 503 or a 500."""
    assert db_admin.post("/admin/knowledge-bases", json={"name": "kb"}).status_code == 201
    for method, path, body in NUL_BODIES:
        response = db_admin.request(method, path, json=body)
        if response.status_code in (200, 201):  # taken as given (SQLite) or cleaned (ingest)
            continue
        assert_envelope(response, 422)
    # Nothing half-written: the task got no live message without its durable copy.
    assert_envelope(db_admin.get("/admin/tasks/t"), 404)


DEEP = b"[" * 100_000 + b"]" * 100_000
ADMIN_BODIES = {
    "deep-nesting": b'{"name": ' + DEEP + b"}",
    "deep-top-level": DEEP,
    "deep-in-object-field": b'{"metainfo": {"a": ' + DEEP + b"}}",
    "invalid-utf8": b'{"name": "\xff\xfe"}',
    "not-json": b"{not json",
    "infinity": b'{"content": "x", "name": 1e999}',
    # Valid JSON that cannot travel on as JSON (64-bit integers, UTF-8): found by schemathesis.
    "int-beyond-64-bits": b'{"metainfo": {"a": 18446744073709551616}}',
    "lone-surrogate": b'{"metainfo": {"a": "\\ud800"}}',
    "array": b"[]",
    "null": b"null",
    "string": b'"text"',
    "empty": b"",
}
ADMIN_POSTS = [
    "/admin/keys",
    "/admin/profiles",
    "/admin/tools",
    "/admin/tasks/t/messages",
    "/admin/tasks/t/metainfo",
    "/admin/knowledge-bases",
    "/admin/knowledge-bases/kb/documents",
    "/admin/knowledge-bases/kb/search",
]


@pytest.mark.parametrize("raw", ADMIN_BODIES.values(), ids=ADMIN_BODIES.keys())
def test_hostile_admin_bodies_are_4xx_envelopes(admin, raw):
    for path in ADMIN_POSTS:
        response = admin.post(path, content=raw, headers={"content-type": "application/json"})
        error = assert_envelope(response, (400, 404, 413, 422))
        assert error["type"] == "invalid_request_error", (path, error)
    assert_envelope(admin.get("/admin/tasks/t"), 404)


@pytest.mark.parametrize(
    ("param", "value"),
    [("app_id", "a\x00b"), ("room_id", "r\r\nX: y"), ("user_id", "u" * 129), ("app_id", "")],
)
def test_task_filters_with_odd_values_are_422(admin, param, value):
    assert_envelope(admin.get("/admin/tasks", params={param: value}), 422)


@pytest.mark.parametrize(
    "path",
    [
        b"/admin/tasks/..%2F..%2Fetc%2Fpasswd",
        b"/admin/tasks/../../etc/passwd",
        b"/admin/tasks/%2e%2e/%2e%2e/etc/passwd",
        b"/admin/tasks/x/../../../etc/passwd",
        b"/admin/tasks/..%5C..%5Cwindows",
        b"/admin/tasks/x%2F..%2Fy/events",
        b"/admin/../v1/models",
    ],
)
def test_path_traversal_finds_no_route(proxy, path):
    head = b"GET " + path + b" HTTP/1.1\r\nHost: proxy\r\nConnection: close\r\n"
    head += b"Authorization: Bearer " + ADMIN.encode() + b"\r\n\r\n"
    response = raw_request(proxy.port, head)
    assert raw_status(response) in (404, 422), response[:300]
    assert b'"error"' in response and b"root:" not in response and b"Traceback" not in response


# SSRF: tool URLs are checked when the tool is saved.

PRIVATE_URLS = [
    "http://127.0.0.1/hook",
    "http://127.0.0.1:6379/",
    "http://[::1]/",
    "http://[::ffff:127.0.0.1]/",
    "http://2130706433/",
    "http://0x7f.1/",
    "http://0177.0.0.1/",
    "http://127.1/",
    "http://0.0.0.0/",
    "http://10.0.0.1/",
    "http://192.168.1.1/",
    "http://172.16.0.1/",
    "http://100.64.0.1/",
    "https://[fc00::1]/",
    "http://[64:ff9b::7f00:1]/",
]
NEVER_URLS = [
    # Link-local and cloud metadata: instance credentials, never a tool.
    "http://169.254.169.254/latest/meta-data/",
    "http://[::ffff:169.254.169.254]/",
    "http://[fe80::1]/",
    "http://100.100.100.200/latest/meta-data/",
    "file:///etc/passwd",
    "gopher://127.0.0.1:6379/_INFO",
    "ftp://example.com/x",
    "dict://127.0.0.1:11211/",
    "http://user:secret@example.com/",
    "http://example.com@127.0.0.1/",
    "//example.com/x",
    "/relative",
    "http://",
    "http:///path",
    "javascript:alert(1)",
    "",
]


def tool(name: str, url: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "description": "A tool.", "url": url, **fields}


@pytest.mark.parametrize("url", PRIVATE_URLS)
def test_tool_urls_to_private_addresses_are_422_unless_allowed(admin, url):
    name = f"t_{uuid.uuid4().hex[:8]}"
    error = assert_envelope(admin.post("/admin/tools", json=tool(name, url)), 422)
    assert "allow_private_network" in error["message"]
    assert_envelope(admin.get(f"/admin/tools/{name}"), 404)
    created = admin.post("/admin/tools", json=tool(name, url, allow_private_network=True))
    assert created.status_code == 201, created.text
    # A PUT cannot slip the address in either.
    replaced = admin.put(f"/admin/tools/{name}", json={"description": "x", "url": url})
    assert_envelope(replaced, 422)
    assert admin.get(f"/admin/tools/{name}").json()["allow_private_network"] is True


@pytest.mark.parametrize("url", NEVER_URLS)
def test_tool_urls_that_are_not_plain_http_are_422_even_when_private_is_allowed(admin, url):
    body = tool(f"t_{uuid.uuid4().hex[:8]}", url, allow_private_network=True)
    assert_envelope(admin.post("/admin/tools", json=body), 422)
    assert_envelope(admin.get(f"/admin/tools/{body['name']}"), 404)


def test_a_tool_url_with_a_public_address_is_accepted(admin):
    name = f"t_{uuid.uuid4().hex[:8]}"
    created = admin.post("/admin/tools", json=tool(name, "https://93.184.215.14/hook"))
    assert created.status_code == 201, created.text


# Knowledge: a document's url is a label, never fetched.


class _Recorder(http.server.BaseHTTPRequestHandler):
    hits: list[str]

    def do_GET(self) -> None:
        self.hits.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(b"SECRET FROM THE INTERNAL NETWORK")

    do_POST = do_HEAD = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def internal_server() -> Iterator[tuple[str, list[str]]]:
    hits: list[str] = []
    handler = type("Recorder", (_Recorder,), {"hits": hits})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", hits
    server.shutdown()
    server.server_close()


def test_document_urls_are_never_fetched(admin, internal_server):
    base_url, hits = internal_server
    assert admin.post("/admin/knowledge-bases", json={"name": "kb"}).status_code == 201
    documents = "/admin/knowledge-bases/kb/documents"
    url = f"{base_url}/internal/secret"
    added = admin.post(
        documents, json={"source_id": "doc", "content": "Opening hours: 9 to 5.", "url": url}
    )
    assert added.status_code == 201, added.text
    assert added.json()["url"] == url
    # Without content there is nothing to ingest: the URL is not a substitute.
    assert_envelope(admin.post(documents, json={"source_id": "doc2", "url": url}), 422)
    # Content that is a URL is text to index, not an address to read.
    assert admin.post(documents, json={"source_id": "doc3", "content": url}).status_code == 201
    found = admin.post("/admin/knowledge-bases/kb/search", json={"query": "secret internal"})
    assert found.status_code == 200, found.text
    assert "SECRET FROM THE INTERNAL NETWORK" not in found.text
    assert hits == []
