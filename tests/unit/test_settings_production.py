"""PROXY_ENV=production refuses the laptop defaults, each by the setting to change."""

from __future__ import annotations

import pytest

from proxy.config_file import describe
from proxy.settings import Settings

SAFE = {
    "env": "production",
    "upstream_base_url": "https://api.deepseek.com/v1",
    "admin_token": "an-admin-token-0123456789",
    "database_url": "postgresql://proxy@db/proxy",
    "redis_url": "redis://redis:6379/0",
}


def test_a_complete_production_configuration_starts() -> None:
    assert Settings(**SAFE).env == "production"
    routes_only = {**SAFE, "upstream_base_url": None}
    routes_only["routes"] = {"voice": {"targets": [{"base_url": "https://api.x.com/v1"}]}}
    assert Settings(**routes_only).routes["voice"].targets[0].base_url == "https://api.x.com/v1"
    sentinels = {**SAFE, "redis_url": None, "redis_sentinels": "s1:26379,s2:26379"}
    assert Settings(**sentinels).redis_sentinels == ["s1:26379", "s2:26379"]


@pytest.mark.parametrize(
    ("unset", "message"),
    [
        (
            "upstream_base_url",
            "PROXY_UPSTREAM_BASE_URL (or routes in PROXY_CONFIG) is required when "
            "PROXY_ENV=production: without it the built-in echo model answers every request",
        ),
        ("admin_token", "PROXY_ADMIN_TOKEN is required when PROXY_ENV=production"),
        (
            "database_url",
            "PROXY_DATABASE_URL is required when PROXY_ENV=production (unset = a SQLite file "
            "in the working directory)",
        ),
        (
            "redis_url",
            "PROXY_REDIS_URL (or PROXY_REDIS_SENTINELS) is required when PROXY_ENV=production "
            "(unset = history in this process only, lost on restart)",
        ),
    ],
)
def test_each_unsafe_default_is_refused_by_name(unset: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        Settings(**{**SAFE, unset: None})
    assert describe(caught.value) == message


def test_every_refusal_is_listed_on_one_line() -> None:
    with pytest.raises(ValueError) as caught:
        Settings(env="production")
    line = describe(caught.value)
    assert "\n" not in line and line.count(" is required when PROXY_ENV=production") == 4


def test_development_keeps_the_laptop_defaults() -> None:
    settings = Settings()
    assert settings.env == "development" and settings.upstream_base_url is None
