from __future__ import annotations

from proxy.upstream.usage import UpstreamUsage, parse_usage


def test_openai_usage_with_cached_tokens() -> None:
    raw = {
        "prompt_tokens": 2006,
        "completion_tokens": 300,
        "total_tokens": 2306,
        "prompt_tokens_details": {"cached_tokens": 1920},
    }
    assert parse_usage(raw) == UpstreamUsage(2006, 300, 1920)


def test_deepseek_cache_hit_tokens() -> None:
    raw = {"prompt_tokens": 100, "completion_tokens": 5, "prompt_cache_hit_tokens": 64}
    assert parse_usage(raw) == UpstreamUsage(100, 5, 64)


def test_missing_or_malformed_usage() -> None:
    assert parse_usage(None) is None
    assert parse_usage("x") is None
    assert parse_usage({"prompt_tokens": "many", "prompt_tokens_details": None}) == UpstreamUsage(
        0, 0, 0
    )
