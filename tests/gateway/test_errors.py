"""Errors before the first byte: OpenAI envelopes with true statuses, never a traceback."""

from __future__ import annotations

import httpx
import openai
import pytest

from proxy.settings import ModelRoute, UpstreamTarget


def assert_envelope(response: httpx.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "code", "param"}
    assert "Traceback" not in response.text
    if code is not None:
        assert error["code"] == code
    return error


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        (b"{not json", None),
        (b"[1, 2]", None),
        (b'{"messages": [{"role": "user", "content": "x"}]}', "model"),
        (b'{"model": "m", "messages": []}', "messages"),
        (b'{"model": "m", "messages": [{"role": "wizard", "content": "x"}]}', "messages.0.role"),
        (b'{"model": "m", "messages": [{"role": "user", "content": 5}]}', "messages.0.content"),
        (
            b'{"model": "m", "stream": "yes", "messages": [{"role": "user", "content": "x"}]}',
            "stream",
        ),
        (b"\xff\xfe\x00garbage", None),
    ],
)
def test_invalid_bodies_are_400(make_proxy, mock, raw, param):
    proxy = make_proxy()
    response = httpx.post(
        proxy.base_url + "/chat/completions",
        content=raw,
        headers={"content-type": "application/json"},
    )
    error = assert_envelope(response, 400)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert mock.requests == []  # nothing reached the upstream


def test_body_too_large_is_413(make_proxy, mock):
    proxy = make_proxy(max_body_bytes=2048)
    big = {"model": "m", "messages": [{"role": "user", "content": "x" * 4096}]}
    assert_envelope(
        httpx.post(proxy.base_url + "/chat/completions", json=big), 413, "body_too_large"
    )


def test_api_keys_are_required_when_configured(make_proxy, mock):
    proxy = make_proxy(api_keys="key-one,key-two")
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    url = proxy.base_url + "/chat/completions"
    assert_envelope(httpx.post(url, json=body), 401, "invalid_api_key")
    assert_envelope(httpx.post(url, json=body, headers={"Authorization": "Bearer nope"}), 401)
    assert (
        httpx.post(url, json=body, headers={"Authorization": "Bearer key-two"}).status_code == 200
    )
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=proxy.base_url, api_key="wrong").models.list()


def test_unknown_route_is_404(make_proxy):
    proxy = make_proxy()
    assert_envelope(httpx.get(proxy.url + "/v1/nothing-here"), 404, "not_found")


@pytest.mark.parametrize(
    ("behaviour", "status", "code"),
    [
        ("status=429", 429, "rate_limit_exceeded"),
        ("status=500", 502, "upstream_failure"),
        ("status=503", 502, "upstream_failure"),
        ("first_token_ms=3000", 504, "upstream_timeout"),
    ],
)
@pytest.mark.parametrize("stream", [True, False])
def test_upstream_failures_map_to_true_statuses(make_proxy, mock, behaviour, status, code, stream):
    target = UpstreamTarget(
        base_url=mock.url + f"/s/{behaviour}/v1", first_token_timeout=0.3, total_timeout=0.3
    )
    proxy = make_proxy(routes={"flaky": ModelRoute(targets=[target])})
    body = {"model": "flaky", "stream": stream, "messages": [{"role": "user", "content": "x"}]}
    response = httpx.post(proxy.base_url + "/chat/completions", json=body, timeout=10)
    assert_envelope(response, status, code)
    if status == 429:
        assert response.headers.get("retry-after") == "1"


def test_upstream_400_is_passed_back_not_retried(make_proxy, mock):
    targets = [
        UpstreamTarget(base_url=mock.url + "/s/status=400/v1"),
        UpstreamTarget(base_url=mock.base_url),
    ]
    proxy = make_proxy(routes={"strict": ModelRoute(targets=targets)})
    body = {"model": "strict", "messages": [{"role": "user", "content": "x"}]}
    error = assert_envelope(httpx.post(proxy.base_url + "/chat/completions", json=body), 400)
    assert error["code"] == "upstream_rejected"
    assert len(mock.requests) == 1
