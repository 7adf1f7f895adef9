"""Recording what each upstream completion reports, for the request being served.

The API layer binds the request's ``UsageOwner`` (app, key, task, route) when it
accepts a turn; the relay reports each completion's usage as it ends (a turn with tool
steps has one per step). Reporting costs a dict append and a background counter update:
the SQL row is written behind (``UsageWriter``), never on the request path.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass

from proxy.access.catalog import Caller
from proxy.call import CallContext
from proxy.observability import tracing
from proxy.upstream.usage import UpstreamUsage, parse_usage
from proxy.usage.budgets import BudgetGate, key_scope
from proxy.usage.prices import PriceTable
from proxy.usage.records import UsageOwner, UsageWriter, now, usage_row


class UsageRecorder:
    def __init__(self, writer: UsageWriter, prices: PriceTable, budgets: BudgetGate) -> None:
        self.writer = writer
        self.prices = prices
        self.budgets = budgets

    def record(self, owner: UsageOwner, model: str | None, usage: UpstreamUsage) -> float:
        """Queue the row and charge the budgets; returns the cost."""
        cost = self.prices.cost(usage, model, owner.route)
        self.writer.submit(usage_row(owner, model, usage, cost, now()))
        tokens = usage.prompt_tokens + usage.completion_tokens
        self.budgets.charge(owner.key_id, owner.app_id, tokens, cost)
        return cost


@dataclass(slots=True)
class UsageScope:
    recorder: UsageRecorder
    owner: UsageOwner
    # This request's totals so far (a turn with tool steps makes several completions).
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0


# Set per request by the API layer (each request runs in its own asyncio task, and the
# tasks it starts copy it): the relay reports to it without knowing who the caller is.
_current: ContextVar[UsageScope | None] = ContextVar("usage_scope", default=None)


def bind(recorder: UsageRecorder, owner: UsageOwner) -> None:
    _current.set(UsageScope(recorder, owner))


def report(model: str | None, usage: UpstreamUsage | None) -> None:
    """A completion of the current request ended with ``usage`` (None: not reported)."""
    scope = _current.get()
    if scope is None or usage is None:
        return
    scope.cost += scope.recorder.record(scope.owner, model, usage)
    scope.prompt_tokens += usage.prompt_tokens
    scope.cached_tokens += usage.cached_tokens
    scope.completion_tokens += usage.completion_tokens
    tracing.annotate(
        {
            "gen_ai.usage.input_tokens": scope.prompt_tokens,
            "gen_ai.usage.output_tokens": scope.completion_tokens,
            "gen_ai.usage.cache_read.input_tokens": scope.cached_tokens,
            "gen_ai.response.model": model or scope.owner.route,
            "proxy.cost": round(scope.cost, 9),
        }
    )


def report_completion(completion: dict[str, object]) -> None:
    """A non-streaming reply: its ``usage`` (a replayed answer has none: not charged)."""
    model = completion.get("model")
    report(model if isinstance(model, str) else None, parse_usage(completion.get("usage")))


def owner_for(caller: Caller, call: CallContext, route: str) -> UsageOwner:
    return UsageOwner(
        route=route,
        app_id=call.app_id,
        key_id=key_scope(caller),
        key_name=caller.name if caller.origin != "anonymous" else None,
        task_id=call.task_id,
        request_id=call.request_id,
    )
