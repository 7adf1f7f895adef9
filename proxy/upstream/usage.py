"""The token usage an upstream reports: ``usage`` of a completion or of the last chunk.

The proxy asks for it on every stream (``stream_options.include_usage``). Providers
differ in where they put cached prompt tokens: OpenAI and vLLM in
``prompt_tokens_details.cached_tokens``, DeepSeek in ``prompt_cache_hit_tokens``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class UpstreamUsage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int


def _count(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def parse_usage(raw: object) -> UpstreamUsage | None:
    """``UpstreamUsage`` from an upstream's ``usage`` object; None if it is not one."""
    if not isinstance(raw, dict):
        return None
    prompt, completion = _count(raw.get("prompt_tokens")), _count(raw.get("completion_tokens"))
    if prompt is None and completion is None:
        return None
    details = raw.get("prompt_tokens_details")
    cached = _count(details.get("cached_tokens")) if isinstance(details, dict) else None
    if cached is None:
        cached = _count(raw.get("prompt_cache_hit_tokens"))
    return UpstreamUsage(
        prompt_tokens=prompt or 0, completion_tokens=completion or 0, cached_tokens=cached or 0
    )
