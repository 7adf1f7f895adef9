"""Only the admin token opens /admin; chat keys never do, and no token means no admin API."""

from __future__ import annotations

import httpx
import pytest

from tests.api.conftest import ADMIN_TOKEN, admin_client

CHAT_KEY = "chat-key-for-tests-0123456789"

ENDPOINTS = [
    ("GET", "/admin/keys", None),
    ("POST", "/admin/keys", {"name": "k"}),
    ("GET", "/admin/profiles", None),
    ("PUT", "/admin/routes/r", {"targets": [{"base_url": "http://127.0.0.1:9"}]}),
    ("GET", "/admin/tasks", None),
    ("GET", "/admin/tasks/some-task", None),
    ("POST", "/admin/tasks/some-task/messages", {"content": "hi"}),
    ("DELETE", "/admin/tasks/some-task", None),
]


@pytest.fixture
def proxy(make_proxy, migrated_sqlite_url):
    return make_proxy(
        redis=True,
        admin_token=ADMIN_TOKEN,
        api_keys=[CHAT_KEY],
        database_url=migrated_sqlite_url,
    )


def call(proxy, method: str, path: str, body, headers: dict[str, str]) -> httpx.Response:
    return httpx.request(method, proxy.url + path, json=body, headers=headers, timeout=10)


def assert_refused(response: httpx.Response, message: str) -> None:
    assert response.status_code == 401, response.text
    error = response.json()["error"]
    assert error["type"] == "authentication_error"
    assert message in error["message"]


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS)
def test_no_token_wrong_token_or_scheme_is_a_401(proxy, method, path, body):
    for headers in (
        {},
        {"Authorization": "Bearer not-the-admin-token-0123456789"},
        {"Authorization": f"Basic {ADMIN_TOKEN}"},
        {"Authorization": ADMIN_TOKEN},
    ):
        assert_refused(call(proxy, method, path, body, headers), "admin token")


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS)
def test_the_admin_token_opens_every_endpoint(proxy, method, path, body):
    response = call(proxy, method, path, body, {"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert response.status_code not in (401, 403), response.text
    assert response.status_code < 500, response.text


def test_chat_keys_do_not_open_admin(proxy):
    config_key = {"Authorization": f"Bearer {CHAT_KEY}"}
    assert_refused(call(proxy, "GET", "/admin/keys", None, config_key), "admin token")
    with admin_client(proxy) as admin:
        created = admin.post("/admin/keys", json={"name": "engine"})
    assert created.status_code == 201
    database_key = {"Authorization": f"Bearer {created.json()['key']}"}
    # The new key works for chat at once, and still not for admin.
    chat = httpx.post(
        proxy.base_url + "/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
        headers=database_key,
    )
    assert chat.status_code == 200, chat.text
    assert_refused(call(proxy, "GET", "/admin/keys", None, database_key), "admin token")


def test_the_admin_token_is_not_a_chat_key(proxy):
    response = httpx.post(
        proxy.base_url + "/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    assert response.status_code == 401


def test_without_an_admin_token_the_admin_api_is_disabled(make_proxy, migrated_sqlite_url):
    proxy = make_proxy(redis=True, database_url=migrated_sqlite_url)
    for method, path, body in ENDPOINTS[:3]:
        for headers in ({}, {"Authorization": f"Bearer {ADMIN_TOKEN}"}):
            assert_refused(call(proxy, method, path, body, headers), "set PROXY_ADMIN_TOKEN")


def test_the_openapi_document_describes_every_admin_endpoint(proxy):
    spec = httpx.get(proxy.url + "/openapi.json").json()
    operations = [
        (path, method, operation)
        for path, methods in spec["paths"].items()
        if path.startswith("/admin")
        for method, operation in methods.items()
    ]
    assert len(operations) >= 21
    for path, method, operation in operations:
        assert operation.get("summary"), (method, path)
        success = [code for code in operation["responses"] if code.startswith("2")]
        assert success, (method, path)
