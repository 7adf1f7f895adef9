"""Keys and profiles declared in config: the key selects the profile the upstream sees."""

from __future__ import annotations

import httpx
import pytest

from proxy.settings import KeySpec, ProfileSpec

SUPPORT = ProfileSpec(system_prompt="You are Acme support.", model="support-model")
SALES = ProfileSpec(
    system_prompt="You sell Acme products.", system_prompt_mode="override", model="sales-model"
)


@pytest.fixture
def proxy(make_proxy, monkeypatch):
    monkeypatch.setenv("TEST_ENGINE_KEY", "engine-key-1")
    monkeypatch.setenv("TEST_OPS_KEY", "ops-key-1")
    return make_proxy(
        keys=[
            KeySpec(name="engine", key_env="TEST_ENGINE_KEY", profile="support"),
            KeySpec(
                name="ops", key_env="TEST_OPS_KEY", profile="support", allow_profile_override=True
            ),
        ],
        profiles={"support": SUPPORT, "sales": SALES},
    )


def chat(proxy, key: str, **extra):
    body = {
        "model": "whatever",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
        **extra,
    }
    return httpx.post(
        proxy.base_url + "/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
    )


def test_the_key_selects_its_profile(proxy, mock):
    assert chat(proxy, "engine-key-1").status_code == 200
    seen = mock.requests[-1].body
    assert seen["model"] == "support-model"
    assert seen["messages"][0] == {
        "role": "system",
        "content": "You are Acme support.\n\nBe brief.",
    }


def test_unknown_keys_are_refused(proxy, mock):
    assert chat(proxy, "nope").status_code == 401
    assert mock.requests == []


def test_a_profile_field_needs_a_key_that_allows_it(proxy, mock):
    refused = chat(proxy, "engine-key-1", profile="sales")
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "profile_not_allowed"
    assert chat(proxy, "ops-key-1", profile="sales").status_code == 200
    seen = mock.requests[-1].body
    assert seen["model"] == "sales-model"
    assert seen["messages"][0] == {"role": "system", "content": "You sell Acme products."}
    assert len(seen["messages"]) == 2 and "profile" not in seen


def test_the_profile_can_come_in_metainfo(proxy, mock):
    response = chat(proxy, "ops-key-1", MetaInfo={"profile": "sales", "room": "r1"})
    assert response.status_code == 200
    seen = mock.requests[-1].body
    assert seen["model"] == "sales-model"
    # MetaInfo is the engine's, for the proxy: forwarded only to a target with
    # forward_metainfo (tests/engines), never by default.
    assert "MetaInfo" not in seen


def test_an_unknown_profile_is_a_400(proxy, mock):
    response = chat(proxy, "ops-key-1", profile="missing")
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "profile"
