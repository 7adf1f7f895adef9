"""Parsing upstream usage, pricing it, and asking for it."""

from __future__ import annotations

import pytest

from proxy.upstream.usage import UpstreamUsage, parse_usage
from proxy.usage.prices import PriceTable
from proxy.usage.request import ask_for_usage
from proxy.usage.specs import ModelPrice


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"prompt_tokens": 10, "completion_tokens": 3}, UpstreamUsage(10, 3, 0)),
        (
            {
                "prompt_tokens": 10,
                "completion_tokens": 3,
                "prompt_tokens_details": {"cached_tokens": 8},
            },
            UpstreamUsage(10, 3, 8),
        ),
        (  # DeepSeek
            {"prompt_tokens": 10, "completion_tokens": 3, "prompt_cache_hit_tokens": 6},
            UpstreamUsage(10, 3, 6),
        ),
        ({"prompt_tokens": 10, "prompt_tokens_details": None}, UpstreamUsage(10, 0, 0)),
        ({"prompt_tokens": "10", "completion_tokens": -1}, None),
        ({"prompt_tokens": True}, None),
        ({}, None),
        (None, None),
        ([1, 2], None),
    ],
)
def test_parse_usage(raw, expected):
    assert parse_usage(raw) == expected


def test_cost_uses_the_cached_price_for_cached_prompt_tokens():
    table = PriceTable(
        {"m": ModelPrice(input_per_million=2, cached_input_per_million=0.5, output_per_million=8)}
    )
    usage = UpstreamUsage(prompt_tokens=1000, completion_tokens=100, cached_tokens=600)
    assert table.cost(usage, "m") == pytest.approx((400 * 2 + 600 * 0.5 + 100 * 8) / 1e6)
    assert table.cost(usage, "unknown", "m") == table.cost(usage, "m")  # the alias's price
    assert table.cost(usage, "unknown") == 0.0
    plain = PriceTable({"m": ModelPrice(input_per_million=2)})
    assert plain.cost(usage, "m") == pytest.approx(1000 * 2 / 1e6)  # cached = input price


def test_usage_is_asked_for_on_streams_only_and_the_callers_wish_is_kept():
    body = {"stream": True, "messages": []}
    asked, passed = ask_for_usage(body)
    assert asked["stream_options"] == {"include_usage": True} and passed is False
    assert "stream_options" not in body  # the caller's body is not changed
    own = {"stream": True, "stream_options": {"include_usage": True}}
    assert ask_for_usage(own) == (own, True)
    odd = {"stream": True, "stream_options": {"include_usage": "yes", "x": 1}}
    assert ask_for_usage(odd)[0]["stream_options"] == {"include_usage": True, "x": 1}
    assert ask_for_usage({"stream": False}) == ({"stream": False}, True)
