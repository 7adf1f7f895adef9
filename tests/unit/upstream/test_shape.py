"""The request's shape per upstream target: URL, headers, body."""

from __future__ import annotations

import orjson
import pytest

from proxy.settings import UpstreamTarget
from proxy.upstream.shape import target_body, target_headers, target_url


def test_the_default_shape_is_openai() -> None:
    target = UpstreamTarget(base_url="https://api.example.com/v1/", api_key="sk-1")
    assert target_url(target) == "https://api.example.com/v1/chat/completions"
    assert target_headers(target) == {
        "Content-Type": "application/json",
        "Accept": "text/event-stream",
        "Authorization": "Bearer sk-1",
    }


def test_azure_openai(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "azure-secret")
    target = UpstreamTarget(
        base_url="https://myres.openai.azure.com/openai/deployments/gpt-4o-mini",
        api_key_env="AZURE_OPENAI_API_KEY",
        auth_header="api-key",
        query={"api-version": "2024-10-21"},
    )
    assert target_url(target) == (
        "https://myres.openai.azure.com/openai/deployments/gpt-4o-mini/chat/completions"
        "?api-version=2024-10-21"
    )
    headers = target_headers(target)
    assert headers["api-key"] == "azure-secret" and "Authorization" not in headers


def test_minimax_path_and_extra_headers_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MINIMAX_GROUP_ID", "group-7")
    target = UpstreamTarget(
        base_url="https://api.minimax.chat",
        path="v1/text/chatcompletion_v2",
        api_key="mm-key",
        headers={"X-Group-Id": "${MINIMAX_GROUP_ID}", "X-Title": "voice", "X-Unset": "${NOPE_X}"},
    )
    assert target_url(target) == "https://api.minimax.chat/v1/text/chatcompletion_v2"
    headers = target_headers(target)
    assert headers["X-Group-Id"] == "group-7" and headers["X-Title"] == "voice"
    assert "X-Unset" not in headers
    assert headers["Authorization"] == "Bearer mm-key"


def test_body_drops_params_and_metainfo_unless_forwarded() -> None:
    body = {"model": "voice", "messages": [], "MetaInfo": {"a": 1}, "seed": 3, "user": "u"}
    plain = UpstreamTarget(base_url="http://u", model="m", drop_params=["seed"])
    assert orjson.loads(target_body(plain, body)) == {"model": "m", "messages": [], "user": "u"}
    forwarding = UpstreamTarget(base_url="http://u", forward_metainfo=True)
    assert orjson.loads(target_body(forwarding, body)) == body
