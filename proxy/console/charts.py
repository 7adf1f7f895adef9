"""Chart geometry for inline SVG (the templates draw it): no script, no external asset."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from proxy.console.timeline import Round


@dataclass(frozen=True, slots=True)
class Segment:
    x: float  # percent of the chart's width
    width: float
    kind: str  # CSS class: its colour
    label: str
    value: float


# Where a turn's second went, in order: the engine's speech recognition, the proxy, the
# upstream's first token, the rest of the engine's wait for the first token (network),
# then the engine's speech synthesis to the first audio frame.
LATENCY_PARTS = (
    ("asr", "ASR (engine)"),
    ("proxy", "proxy"),
    ("upstream", "upstream first token"),
    ("network", "engine to first token, rest"),
    ("tts", "TTS first frame (engine)"),
)


def latency_parts(round_: Round) -> dict[str, float]:
    answered = round_.answered
    proxy = (answered.proxy_ms or 0.0) if answered is not None else 0.0
    upstream = (answered.upstream_ms or 0.0) if answered is not None else 0.0
    metrics = round_.metrics
    parts = {
        "asr": metrics.get("asr_latency", 0.0),
        "proxy": proxy,
        "upstream": upstream,
        "network": max(0.0, metrics.get("llm_first_token", 0.0) - proxy - upstream),
        "tts": metrics.get("tts_first_frame_latency", 0.0),
    }
    return {kind: value for kind, value in parts.items() if value > 0}


def latency_scale(rounds: list[Round]) -> float:
    """One scale for every round of a task, so that bars compare."""
    longest = max((sum(latency_parts(r).values()) for r in rounds), default=0.0)
    return max(longest, 1.0)


def latency_segments(round_: Round, scale: float) -> list[Segment]:
    segments, x = [], 0.0
    labels = dict(LATENCY_PARTS)
    for kind, value in latency_parts(round_).items():
        width = 100.0 * value / scale
        segments.append(Segment(round(x, 3), round(width, 3), kind, labels[kind], round(value)))
        x += width
    return segments


USAGE_PARTS = (
    ("prompt", "prompt (uncached)"),
    ("cached", "prompt (cached)"),
    ("completion", "completion"),
)


def usage_bars(items: list[dict[str, Any]], label_of: Any) -> list[dict[str, Any]]:
    """One stacked bar per group: uncached prompt, cached prompt and completion tokens."""
    longest = max((int(i["total_tokens"]) for i in items), default=0) or 1
    bars = []
    for item in items:
        values = {
            "prompt": int(item["prompt_tokens"]) - int(item["cached_tokens"]),
            "cached": int(item["cached_tokens"]),
            "completion": int(item["completion_tokens"]),
        }
        x, segments = 0.0, []
        for kind, label in USAGE_PARTS:
            width = 100.0 * values[kind] / longest
            segments.append(Segment(round(x, 3), round(width, 3), kind, label, values[kind]))
            x += width
        bars.append({"label": label_of(item), "segments": segments, "total": item["total_tokens"]})
    return bars
