"""PATCH /admin/keys/{id}: a key's name, profile, rate limit and budgets change in place.

The app binding and the secret are not editable; config-declared keys are read-only.
"""

from __future__ import annotations

import pytest

from proxy.settings import KeySpec
from tests.api.conftest import ADMIN_TOKEN, admin_client
from tests.api.test_admin_config import assert_error, chat


@pytest.fixture
def proxy(make_proxy, mock, migrated_database_url, monkeypatch):
    monkeypatch.setenv("TEST_CONFIG_KEY", "config-key-0123456789")
    return make_proxy(
        redis=True,
        admin_token=ADMIN_TOKEN,
        database_url=migrated_database_url,
        keys=[KeySpec(name="gitops-engine", key_env="TEST_CONFIG_KEY")],
    )


@pytest.fixture
def admin(proxy):
    with admin_client(proxy) as client:
        yield client


def test_a_key_is_edited_and_the_change_takes_effect_at_once(proxy, admin, mock):
    assert admin.post("/admin/profiles", json={"name": "sales", "model": "sales-model"}).is_success
    created = admin.post("/admin/keys", json={"name": "engine", "app_id": "1400000001"}).json()
    assert chat(proxy, created["key"]).status_code == 200
    assert chat(proxy, created["key"]).status_code == 200

    changed = admin.patch(
        f"/admin/keys/{created['id']}",
        json={
            "name": "engine-2",
            "profile": "sales",
            "rate_limit_per_minute": 1,
            "max_tokens_per_day": 5000,
            "max_cost_per_day": 2.5,
        },
    )
    assert changed.status_code == 200, changed.text
    out = changed.json()
    assert out["name"] == "engine-2" and out["profile"] == "sales"
    assert out["rate_limit_per_minute"] == 1 and out["max_tokens_per_day"] == 5000
    assert out["max_cost_per_day"] == 2.5
    assert out["app_id"] == "1400000001" and out["prefix"] == created["prefix"]
    assert admin.get(f"/admin/keys/{created['id']}").json() == out

    # The same secret still works, with the new profile and the new rate limit.
    assert chat(proxy, created["key"]).status_code == 200
    assert mock.requests[-1].body["model"] == "sales-model"
    # Fixed one-minute windows: of two more requests at least one shares a window with
    # an earlier one, even across a minute boundary.
    assert 429 in [chat(proxy, created["key"]).status_code for _ in range(2)]

    # Only the fields sent change; null clears a limit or the profile.
    cleared = admin.patch(
        f"/admin/keys/{created['id']}", json={"rate_limit_per_minute": None, "profile": None}
    ).json()
    assert cleared["rate_limit_per_minute"] is None and cleared["profile"] is None
    assert cleared["name"] == "engine-2" and cleared["max_tokens_per_day"] == 5000
    assert chat(proxy, created["key"]).status_code == 200


def test_unknown_and_config_keys_cannot_be_edited(admin):
    assert_error(admin.patch("/admin/keys/nope", json={"name": "x"}), 404)
    assert_error(admin.patch("/admin/keys/config:nope", json={"name": "x"}), 404)
    assert_error(admin.patch("/admin/keys/config:gitops-engine", json={"name": "x"}), 409)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"name": ""}, "name"),
        ({"name": None}, "name"),
        ({"rate_limit_per_minute": 0}, "rate_limit_per_minute"),
        ({"max_tokens_per_day": -1}, "max_tokens_per_day"),
        ({"max_cost_per_day": 0}, "max_cost_per_day"),
        ({"max_cost_per_day": "lots"}, "max_cost_per_day"),
        ({"profile": "no-such-profile"}, "profile"),
        ({"app_id": "1400000002"}, "app_id"),  # the app binding is fixed
        ({"key": "vp-mine"}, "key"),  # so is the secret
        ({"key_hash": "0" * 64}, "key_hash"),
    ],
)
def test_invalid_key_edits_are_422(admin, body, param):
    created = admin.post("/admin/keys", json={"name": "k"}).json()
    error = assert_error(admin.patch(f"/admin/keys/{created['id']}", json=body), 422)
    assert error["type"] == "invalid_request_error"
    assert param in (error["param"] or "")
    assert admin.get(f"/admin/keys/{created['id']}").json()["name"] == "k"


def test_editing_a_key_needs_the_admin_token(proxy, admin):
    import httpx

    created = admin.post("/admin/keys", json={"name": "k"}).json()
    refused = httpx.patch(proxy.url + f"/admin/keys/{created['id']}", json={"name": "x"})
    assert refused.status_code == 401
