"""Configuration shapes of usage: the per-model price table and a daily budget."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ModelPrice(BaseModel):
    """What one model costs, per million tokens, in whatever currency the operator uses."""

    input_per_million: float = Field(default=0.0, ge=0, description="Uncached prompt tokens.")
    cached_input_per_million: float | None = Field(
        default=None, ge=0, description="Cached prompt tokens; unset = the input price."
    )
    output_per_million: float = Field(default=0.0, ge=0, description="Completion tokens.")


class Budget(BaseModel):
    """Daily caps (UTC day). Past one of them, further turns get 429 ``budget_exceeded``."""

    max_tokens_per_day: int | None = Field(default=None, ge=1)
    max_cost_per_day: float | None = Field(default=None, gt=0)

    @property
    def capped(self) -> bool:
        return self.max_tokens_per_day is not None or self.max_cost_per_day is not None
