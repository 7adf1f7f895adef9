"""Tools through the admin API, on SQLite and PostgreSQL: CRUD, validation, auth,
and the registry of the serving replica refreshed at once."""

from __future__ import annotations

import httpx
import pytest

from tests.api.conftest import ADMIN_TOKEN, admin_client

WEATHER = {
    "name": "get_weather",
    "description": "Current weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
    "url": "https://tools.example/weather",
    "timeout_seconds": 3,
    "secret_header": "X-Api-Key",
    "secret_env": "WEATHER_TOOL_KEY",
    "filler": "Let me check the weather.",
    "show_result": True,
}


@pytest.fixture
def proxy(make_proxy, migrated_database_url):
    return make_proxy(redis=True, admin_token=ADMIN_TOKEN, database_url=migrated_database_url)


@pytest.fixture
def admin(proxy):
    with admin_client(proxy) as client:
        yield client


def registry(proxy):
    return proxy.state.tools


def assert_error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    return response.json()["error"]


def test_a_tool_is_created_read_replaced_and_deleted(proxy, admin):
    created = admin.post("/admin/tools", json=WEATHER)
    assert created.status_code == 201, created.text
    tool = created.json()
    assert {k: tool[k] for k in WEATHER} == WEATHER
    assert tool["allow_private_network"] is False and tool["created_at"].endswith("Z")
    spec = registry(proxy).get("get_weather")
    assert spec is not None and spec.secret_env == "WEATHER_TOOL_KEY"  # live at once

    assert admin.get("/admin/tools/get_weather").json() == tool
    assert [t["name"] for t in admin.get("/admin/tools").json()] == ["get_weather"]

    changed = {k: v for k, v in WEATHER.items() if k != "name"}
    changed.update(url="https://tools.example/v2/weather", secret_header=None, secret_env=None)
    replaced = admin.put("/admin/tools/get_weather", json=changed)
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["url"] == "https://tools.example/v2/weather"
    assert replaced.json()["secret_env"] is None
    assert registry(proxy).get("get_weather").url == "https://tools.example/v2/weather"

    assert admin.delete("/admin/tools/get_weather").status_code == 204
    assert registry(proxy).get("get_weather") is None
    assert_error(admin.get("/admin/tools/get_weather"), 404)
    assert_error(admin.delete("/admin/tools/get_weather"), 404)
    assert admin.get("/admin/tools").json() == []


def test_defaults_give_a_tool_without_parameters(admin):
    minimal = {"name": "hang_up", "description": "End the call.", "url": "https://t.example/"}
    created = admin.post("/admin/tools", json=minimal)
    assert created.status_code == 201, created.text
    tool = created.json()
    assert tool["parameters"] == {"type": "object", "properties": {}}
    assert tool["timeout_seconds"] == 5.0 and tool["show_result"] is False


def test_a_taken_name_is_a_conflict(admin):
    assert admin.post("/admin/tools", json=WEATHER).status_code == 201
    error = assert_error(admin.post("/admin/tools", json=WEATHER), 409)
    assert "exists" in error["message"]


def test_replacing_a_missing_tool_is_not_found(admin):
    body = {k: v for k, v in WEATHER.items() if k != "name"}
    assert_error(admin.put("/admin/tools/get_weather", json=body), 404)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": "get weather"}, "pattern"),
        ({"name": "x" * 65}, "pattern"),
        ({"name": "get.weather"}, "pattern"),
        ({"name": ""}, "pattern"),
        ({"parameters": {"type": "array", "items": {"type": "string"}}}, '"type": "object"'),
        ({"parameters": {"properties": {"city": {"type": "string"}}}}, '"type": "object"'),
        ({"parameters": {"type": "object", "properties": ["city"]}}, "properties"),
        ({"parameters": {"type": "object", "required": "city"}}, "required"),
        ({"url": "ftp://tools.example/weather"}, "http"),
        ({"url": "tools.example/weather"}, "http"),
        ({"url": "https://user:pw@tools.example/"}, "credentials"),
        ({"url": "http://169.254.169.254/latest/meta-data/"}, "metadata"),
        (
            {"url": "http://169.254.169.254/latest/meta-data/", "allow_private_network": True},
            "metadata",
        ),
        ({"url": "http://127.0.0.1:8080/tool"}, "allow_private_network"),
        ({"secret_env": None}, "secret_header and secret_env"),
        ({"secret_env": "NOT-A-VARIABLE"}, "pattern"),
        ({"secret": "inline-value"}, "environment variable"),
        ({"timeout_seconds": 0}, "greater than 0"),
        ({"description": ""}, "at least 1"),
    ],
)
def test_invalid_tools_are_refused_with_422(admin, change, message):
    body = {**WEATHER, **change}
    error = assert_error(admin.post("/admin/tools", json=body), 422)
    assert message in error["message"], error
    assert admin.get("/admin/tools").json() == []


def test_a_private_url_is_accepted_when_the_tool_allows_it(proxy, admin):
    body = {**WEATHER, "url": "http://127.0.0.1:8080/tool", "allow_private_network": True}
    created = admin.post("/admin/tools", json=body)
    assert created.status_code == 201, created.text
    assert registry(proxy).get("get_weather").allow_private_network is True


def test_an_invalid_name_in_the_path_is_refused(admin):
    assert_error(admin.get("/admin/tools/not a name"), 422)


def test_tools_need_the_admin_token(proxy):
    for token in (None, "wrong-token-0123456789"):
        with admin_client(proxy, token) as client:
            assert_error(client.get("/admin/tools"), 401)
            assert_error(client.post("/admin/tools", json=WEATHER), 401)
            assert_error(client.delete("/admin/tools/get_weather"), 401)
    with admin_client(proxy) as client:
        assert client.get("/admin/tools").json() == []
