"""Cost of a completion from the per-model price table (``prices`` in config)."""

from __future__ import annotations

from proxy.upstream.usage import UpstreamUsage
from proxy.usage.specs import ModelPrice


class PriceTable:
    def __init__(self, prices: dict[str, ModelPrice]) -> None:
        self._prices = dict(prices)

    def price_for(self, *models: str | None) -> ModelPrice | None:
        """The first of ``models`` with a price (the upstream's name, then the alias)."""
        for model in models:
            if model and model in self._prices:
                return self._prices[model]
        return None

    def cost(self, usage: UpstreamUsage, *models: str | None) -> float:
        """0 for a model with no price: unknown is not free, but there is nothing to charge."""
        price = self.price_for(*models)
        if price is None:
            return 0.0
        cached = min(usage.cached_tokens, usage.prompt_tokens)
        cached_price = (
            price.input_per_million
            if price.cached_input_per_million is None
            else price.cached_input_per_million
        )
        return (
            (usage.prompt_tokens - cached) * price.input_per_million
            + cached * cached_price
            + usage.completion_tokens * price.output_per_million
        ) / 1_000_000
