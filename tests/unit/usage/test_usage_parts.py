"""Pricing upstream usage."""

from __future__ import annotations

import pytest

from proxy.upstream.usage import UpstreamUsage
from proxy.usage.prices import PriceTable
from proxy.usage.specs import ModelPrice


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
