"""Keys, profiles and routes through the admin API, on SQLite and PostgreSQL.

Database entities are created, changed and deleted, and take effect at once;
config-declared ones are listed with origin "config" and refused with 409.
"""

from __future__ import annotations

import httpx
import pytest

from proxy.settings import KeySpec, ModelRoute, ProfileSpec, UpstreamTarget
from tests.api.conftest import ADMIN_TOKEN, admin_client

CONFIG_PROFILE = ProfileSpec(system_prompt="You are Acme support.", model="support-model")


@pytest.fixture
def proxy(make_proxy, mock, migrated_database_url, monkeypatch):
    monkeypatch.setenv("TEST_CONFIG_KEY", "config-key-0123456789")
    return make_proxy(
        redis=True,
        admin_token=ADMIN_TOKEN,
        database_url=migrated_database_url,
        keys=[KeySpec(name="gitops-engine", key_env="TEST_CONFIG_KEY", profile="support")],
        profiles={"support": CONFIG_PROFILE},
        routes={
            "gitops-route": ModelRoute(
                targets=[UpstreamTarget(base_url=mock.base_url, api_key="inline-secret", model="x")]
            )
        },
    )


@pytest.fixture
def admin(proxy):
    with admin_client(proxy) as client:
        yield client


def chat(proxy, key: str | None, model: str = "m") -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    return httpx.post(proxy.base_url + "/chat/completions", json=body, headers=headers)


def assert_error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    return response.json()["error"]


# Keys.


def test_a_created_key_is_shown_once_and_works_at_once(proxy, admin, mock):
    created = admin.post("/admin/keys", json={"name": "engine", "app_id": "1400000001"})
    assert created.status_code == 201, created.text
    key = created.json()
    assert key["key"].startswith(key["prefix"]) and key["origin"] == "database"
    assert key["active"] is True and key["app_id"] == "1400000001"
    assert chat(proxy, key["key"]).status_code == 200

    listed = admin.get("/admin/keys").json()
    assert all("key" not in item and "key_hash" not in item for item in listed)
    mine = next(item for item in listed if item["id"] == key["id"])
    assert mine["name"] == "engine" and mine["prefix"] == key["prefix"]
    one = admin.get(f"/admin/keys/{key['id']}").json()
    assert "key" not in one and one["id"] == key["id"]


def test_revoked_and_deleted_keys_stop_working_at_once(proxy, admin):
    first = admin.post("/admin/keys", json={"name": "a"}).json()
    second = admin.post("/admin/keys", json={"name": "b"}).json()
    revoked = admin.post(f"/admin/keys/{first['id']}/revoke")
    assert revoked.status_code == 200
    assert revoked.json()["active"] is False and revoked.json()["revoked_at"]
    assert chat(proxy, first["key"]).status_code == 401
    assert chat(proxy, second["key"]).status_code == 200

    assert admin.delete(f"/admin/keys/{second['id']}").status_code == 204
    assert chat(proxy, second["key"]).status_code == 401
    assert_error(admin.get(f"/admin/keys/{second['id']}"), 404)
    assert_error(admin.delete(f"/admin/keys/{second['id']}"), 404)


def test_unknown_keys_are_404(admin):
    assert_error(admin.get("/admin/keys/nope"), 404)
    assert_error(admin.post("/admin/keys/nope/revoke"), 404)
    assert_error(admin.delete("/admin/keys/nope"), 404)
    assert_error(admin.get("/admin/keys/config:nope"), 404)


def test_config_keys_are_listed_and_read_only(admin):
    listed = admin.get("/admin/keys").json()
    config = next(item for item in listed if item["name"] == "gitops-engine")
    assert config["origin"] == "config" and config["id"] == "config:gitops-engine"
    assert config["profile"] == "support" and config.get("prefix") is None
    assert admin.get("/admin/keys/config:gitops-engine").json()["origin"] == "config"
    assert_error(admin.post("/admin/keys/config:gitops-engine/revoke"), 409)
    assert_error(admin.delete("/admin/keys/config:gitops-engine"), 409)
    assert_error(admin.post("/admin/keys", json={"name": "gitops-engine"}), 409)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "k", "rate_limit_per_minute": 0}, "rate_limit_per_minute"),
        ({"name": "k", "expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
        ({"name": "k", "expires_at": "next tuesday"}, "expires_at"),
        ({"name": "k", "key_hash": "0" * 64}, "key_hash"),
        ({"name": "k", "profile": "no-such-profile"}, "profile"),
        ({"name": "k", "app_id": "1400:evil"}, "app_id"),  # would forge other apps' task keys
    ],
)
def test_invalid_keys_are_422(admin, body, param):
    error = assert_error(admin.post("/admin/keys", json=body), 422)
    assert error["type"] == "invalid_request_error"
    assert param in (error["param"] or "")


def test_a_key_can_use_a_database_profile(proxy, admin, mock):
    assert admin.post("/admin/profiles", json={"name": "sales", "model": "sales-model"}).is_success
    created = admin.post("/admin/keys", json={"name": "seller", "profile": "sales"})
    assert created.status_code == 201, created.text
    assert created.json()["profile"] == "sales"
    assert chat(proxy, created.json()["key"]).status_code == 200
    assert mock.requests[-1].body["model"] == "sales-model"


def test_a_key_can_use_a_config_profile(proxy, admin, mock):
    created = admin.post("/admin/keys", json={"name": "helper", "profile": "support"})
    assert created.status_code == 201, created.text
    assert chat(proxy, created.json()["key"]).status_code == 200
    assert mock.requests[-1].body["model"] == "support-model"


# Profiles.


def test_profile_lifecycle(proxy, admin, mock):
    created = admin.post(
        "/admin/profiles",
        json={
            "name": "concierge",
            "system_prompt": "You are the hotel concierge.",
            "system_prompt_mode": "override",
            "history": {"max_turns": 5},
            "filler_phrases": ["One moment."],
        },
    )
    assert created.status_code == 201, created.text
    assert created.json()["origin"] == "database" and created.json()["history"] == {"max_turns": 5}
    assert_error(admin.post("/admin/profiles", json={"name": "concierge"}), 409)

    key = admin.post("/admin/keys", json={"name": "hotel", "profile": "concierge"}).json()["key"]
    assert chat(proxy, key).status_code == 200
    assert mock.requests[-1].body["messages"][0] == {
        "role": "system",
        "content": "You are the hotel concierge.",
    }

    replaced = admin.put(
        "/admin/profiles/concierge", json={"system_prompt": "You are the bellboy."}
    )
    assert replaced.status_code == 200, replaced.text
    body = replaced.json()
    # PUT replaces: what is not given returns to its default.
    assert body["system_prompt_mode"] == "prefix" and body["filler_phrases"] == []
    assert admin.get("/admin/profiles/concierge").json()["system_prompt"] == "You are the bellboy."
    assert chat(proxy, key).status_code == 200
    assert mock.requests[-1].body["messages"][0]["content"] == "You are the bellboy."

    assert admin.delete("/admin/profiles/concierge").status_code == 204
    assert_error(admin.get("/admin/profiles/concierge"), 404)
    assert_error(admin.delete("/admin/profiles/concierge"), 404)
    assert_error(admin.put("/admin/profiles/concierge", json={}), 404)


def test_config_profiles_are_listed_and_read_only(admin):
    assert admin.post("/admin/profiles", json={"name": "db-one"}).status_code == 201
    listed = {item["name"]: item for item in admin.get("/admin/profiles").json()}
    assert listed["support"]["origin"] == "config"
    assert listed["support"]["system_prompt"] == "You are Acme support."
    assert listed["db-one"]["origin"] == "database"
    assert admin.get("/admin/profiles/support").json()["origin"] == "config"
    assert_error(admin.post("/admin/profiles", json={"name": "support"}), 409)
    assert_error(admin.put("/admin/profiles/support", json={"model": "m"}), 409)
    assert_error(admin.delete("/admin/profiles/support"), 409)


@pytest.mark.parametrize(
    "body",
    [
        {"name": "p", "system_prompt_mode": "append"},
        {"name": "p", "history": {"max_turnz": 3}},
        {"name": "p", "history": {"token_budget": 1}},
        {"name": "has space"},
        {"name": "p", "colour": "blue"},
        {"system_prompt": "no name"},
    ],
)
def test_invalid_profiles_are_422(admin, body):
    assert_error(admin.post("/admin/profiles", json=body), 422)


# Routes.


def target(mock, **extra) -> dict:
    return {"base_url": mock.base_url, "api_key_env": "TEST_ROUTE_KEY", **extra}


def test_route_lifecycle_takes_effect_at_once(proxy, admin, mock):
    key = admin.post("/admin/keys", json={"name": "no-profile"}).json()["key"]
    created = admin.put("/admin/routes/voice", json={"targets": [target(mock, model="first")]})
    assert created.status_code == 201, created.text
    assert created.json()["origin"] == "database"
    assert chat(proxy, key, model="voice").status_code == 200
    assert mock.requests[-1].body["model"] == "first"

    replaced = admin.put("/admin/routes/voice", json={"targets": [target(mock, model="second")]})
    assert replaced.status_code == 200
    assert chat(proxy, key, model="voice").status_code == 200
    assert mock.requests[-1].body["model"] == "second"
    assert admin.get("/admin/routes/voice").json()["targets"][0]["model"] == "second"

    assert admin.delete("/admin/routes/voice").status_code == 204
    assert chat(proxy, key, model="voice").status_code == 200
    assert mock.requests[-1].body["model"] == "voice"  # back to the default upstream
    assert_error(admin.get("/admin/routes/voice"), 404)
    assert_error(admin.delete("/admin/routes/voice"), 404)


def test_route_aliases_may_contain_slashes(admin, mock):
    assert admin.put("/admin/routes/acme/voice-1", json={"targets": [target(mock)]}).is_success
    assert admin.get("/admin/routes/acme/voice-1").json()["alias"] == "acme/voice-1"


def test_config_routes_are_listed_without_secrets_and_read_only(admin, mock):
    admin.put("/admin/routes/db-route", json={"targets": [target(mock)]})
    listed = admin.get("/admin/routes")
    assert "inline-secret" not in listed.text
    routes = {item["alias"]: item for item in listed.json()}
    assert routes["gitops-route"]["origin"] == "config"
    assert routes["db-route"]["origin"] == "database"
    assert "api_key" not in routes["gitops-route"]["targets"][0]
    assert_error(admin.put("/admin/routes/gitops-route", json={"targets": [target(mock)]}), 409)
    assert_error(admin.delete("/admin/routes/gitops-route"), 409)


@pytest.mark.parametrize(
    "targets",
    [
        [],
        [{"base_url": "http://127.0.0.1:9", "api_key": "sk-inline"}],
        [{"base_url": "ftp://example.com"}],
        [{"base_url": "http://127.0.0.1:9", "first_token_timeout": 0}],
        [{"base_url": "http://127.0.0.1:9", "weight": 3}],
        [{"model": "no-url"}],
    ],
)
def test_invalid_routes_are_422(admin, targets):
    error = assert_error(admin.put("/admin/routes/bad", json={"targets": targets}), 422)
    if targets and "api_key" in targets[0]:
        assert "api_key_env" in error["message"]
    assert_error(admin.get("/admin/routes/bad"), 404)


# Paging parameters of the task list.


@pytest.mark.parametrize(
    "query",
    [
        {"offset": -1},
        {"limit": 0},
        {"limit": 501},
        {"limit": "ten"},
        {"started_after": "yesterday"},
        {"active": "maybe"},
    ],
)
def test_invalid_task_list_parameters_are_422(admin, query):
    assert_error(admin.get("/admin/tasks", params=query), 422)


def test_task_list_paging_echoes_offset_and_limit(admin):
    page = admin.get("/admin/tasks", params={"offset": 5, "limit": 500}).json()
    assert page == {"items": [], "total": 0, "offset": 5, "limit": 500}
    assert admin.get("/admin/tasks").json()["limit"] == 50
