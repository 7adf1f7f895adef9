"""Token usage as an upstream reports it, including the prompt tokens served from cache."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class UpstreamUsage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def parse_usage(raw: object) -> UpstreamUsage | None:
    """An OpenAI ``usage`` object; ``None`` when there is none.

    Cached prompt tokens are ``prompt_tokens_details.cached_tokens`` (OpenAI, vLLM,
    SGLang); DeepSeek reports ``prompt_cache_hit_tokens`` instead.
    """
    if not isinstance(raw, dict):
        return None
    details = raw.get("prompt_tokens_details")
    cached = _count(details.get("cached_tokens")) if isinstance(details, dict) else 0
    cached = cached or _count(raw.get("prompt_cache_hit_tokens"))
    return UpstreamUsage(
        prompt_tokens=_count(raw.get("prompt_tokens")),
        completion_tokens=_count(raw.get("completion_tokens")),
        cached_tokens=cached,
    )
