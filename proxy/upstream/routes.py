"""Model routing: alias -> ordered targets, with fallback, hedging and cooldown.

A request moves on to the next target only while nothing has reached the caller:
connect errors, timeouts to the first *speakable* event, 429 and 5xx. A 4xx from an
upstream (other than 429) is the request's fault and goes straight back to the caller.

A route may hedge (``hedge_after_ms``): when the running target has no speakable token
by then, the next target starts alongside; the first speakable token wins and the
other connection is closed at once. A target that failed cools down
(``proxy.upstream.cooldown``): later requests skip it instead of waiting on it again.
All targets together get ``first_token_budget_ms``, so the caller hears a first word
(or an error) well inside a voice engine's timeout.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any, Protocol

from proxy.errors import UpstreamError, UpstreamTimeout
from proxy.metrics import ProxyMetrics
from proxy.observability import tracing, turnlog
from proxy.settings import ECHO_MODEL, ModelRoute, Settings, UpstreamTarget
from proxy.upstream.client import UpstreamClient, UpstreamStream
from proxy.upstream.cooldown import Admission, CooldownBook, target_key
from proxy.upstream.echo import EchoStream, echo_completion
from proxy.upstream.shape import target_body
from proxy.upstream.usage import parse_usage

log = logging.getLogger(__name__)


class CompletionStream(Protocol):
    """What the relay consumes: an upstream stream or the echo model."""

    first_events: list[bytes]
    waited: float  # seconds spent waiting on upstreams before the first event

    @property
    def reasoning_text(self) -> str: ...  # the reasoning removed from the events so far

    def batches(self) -> AsyncGenerator[list[bytes], None]: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class RoutePlan:
    """A route as the router uses it: its targets in order and its timing rules."""

    name: str  # the alias, or "default"
    targets: list[UpstreamTarget]
    hedge_after_ms: int | None
    cooldown_seconds: float
    first_token_budget_ms: int

    @classmethod
    def of(cls, name: str, route: ModelRoute) -> RoutePlan:
        return cls(
            name,
            route.targets,
            route.hedge_after_ms,
            route.cooldown_seconds,
            route.first_token_budget_ms,
        )


class RouteTable:
    """Which targets serve a model name. ``None`` means the built-in echo model."""

    def __init__(self, settings: Settings) -> None:
        self._config_routes = {
            alias: RoutePlan.of(alias, route) for alias, route in settings.routes.items()
        }
        self._routes = dict(self._config_routes)
        default = settings.default_target()
        self._default = RoutePlan.of("default", ModelRoute(targets=[default])) if default else None

    def set_database_routes(self, routes: dict[str, list[UpstreamTarget]]) -> None:
        """Routes managed through the admin API; config-declared aliases win."""
        database = {
            alias: RoutePlan.of(alias, ModelRoute(targets=targets))
            for alias, targets in routes.items()
        }
        self._routes = {**database, **self._config_routes}

    def plan(self, model: str) -> RoutePlan | None:
        if model == ECHO_MODEL and ECHO_MODEL not in self._routes:
            return None
        return self._routes.get(model, self._default)

    def resolve(self, model: str) -> list[UpstreamTarget] | None:
        plan = self.plan(model)
        return plan.targets if plan is not None else None

    @property
    def aliases(self) -> list[str]:
        return list(self._routes)

    @property
    def default_target(self) -> UpstreamTarget | None:
        return self._default.targets[0] if self._default else None

    @property
    def has_upstream(self) -> bool:
        return bool(self._routes or self._default)


def _body_for(target: UpstreamTarget, body: dict[str, Any]) -> bytes:
    if body.get("stream"):
        # Always ask for usage: cached prompt tokens are how prompt caching is seen. The
        # relay drops the usage chunk for a caller that did not ask for it.
        options = body.get("stream_options")
        if not isinstance(options, dict) or not options.get("include_usage"):
            options = options if isinstance(options, dict) else {}
            body = {**body, "stream_options": {**options, "include_usage": True}}
    return target_body(target, body)  # its model name, without what it must not get


@dataclass(slots=True)
class _Attempt:
    position: int
    target: UpstreamTarget
    key: str  # the target's cooldown key
    started: float


class UpstreamRouter:
    def __init__(
        self,
        client: UpstreamClient,
        table: RouteTable,
        metrics: ProxyMetrics | None = None,
        cooldowns: CooldownBook | None = None,
    ) -> None:
        self.client = client
        self.table = table
        self.metrics = metrics
        self.cooldowns = cooldowns or CooldownBook()
        self.fallbacks = 0  # how often a target failed and the next one was tried

    async def open_stream(self, body: dict[str, Any]) -> CompletionStream:
        model = str(body.get("model", ""))
        with tracing.child(
            "proxy.upstream.first_token", {"gen_ai.request.model": model}, client=True
        ):
            stream = await self._open_stream(model, body)
        turnlog.upstream_waited(stream.waited)
        return stream

    async def _open_stream(self, model: str, body: dict[str, Any]) -> CompletionStream:
        plan = self.table.plan(model)
        if plan is None:
            return EchoStream(body)
        started = time.perf_counter()
        deadline = started + plan.first_token_budget_ms / 1000
        if plan.hedge_after_ms is None:
            return await self._in_turn(plan, body, model, started, deadline)
        upcoming = list(enumerate(plan.targets))
        skipped: list[tuple[int, UpstreamTarget]] = []
        running: dict[asyncio.Task[UpstreamStream], _Attempt] = {}
        last_error: UpstreamError | None = None
        hedged = False
        try:
            while True:
                if not running and not await self._start_next(
                    plan, body, upcoming, running, deadline, skipped, last_error is None
                ):
                    break
                hedge_in = self._hedge_in(plan, upcoming, running)
                done, _ = await asyncio.wait(
                    running, timeout=hedge_in, return_when=asyncio.FIRST_COMPLETED
                )
                if not done:  # no speakable token by hedge_after_ms: start the next one too
                    if await self._start_next(plan, body, upcoming, running, deadline, skipped):
                        hedged = True
                        if self.metrics is not None:
                            newest = list(running.values())[-1]
                            self.metrics.hedges.labels(plan.name, _label(newest.target)).inc()
                    continue
                for task in done:
                    attempt = running.pop(task)
                    error = task.exception()
                    if error is None:
                        return self._won(
                            plan, task.result(), attempt, running, started, hedged, model
                        )
                    if not isinstance(error, UpstreamError):
                        raise error
                    last_error = self._note_failure(error, attempt, model, plan, bool(upcoming))
        finally:
            for task in running:
                task.cancel()  # the loser: its connection is closed as the task ends
        if last_error is None:
            raise UpstreamTimeout(f"no target of route {plan.name!r} answered in time")
        raise last_error

    async def _in_turn(
        self, plan: RoutePlan, body: dict[str, Any], model: str, started: float, deadline: float
    ) -> UpstreamStream:
        """No hedging: one target at a time, awaited in place (no task per attempt: this
        is the hot path of every request). When every target is cooling down, the first
        is tried all the same."""
        cooling: list[tuple[int, UpstreamTarget, str]] = []
        last_error: UpstreamError | None = None
        tried = False
        for position, target in enumerate(plan.targets):
            key = target_key(target.base_url, target.model)
            if await self.cooldowns.admit(key, target.first_token_timeout) is Admission.SKIP:
                cooling.append((position, target, key))
                if self.metrics is not None:
                    self.metrics.cooldown_skips.labels(plan.name, _label(target)).inc()
                continue
            tried = True
            stream, last_error = await self._attempt(
                plan, body, model, position, target, key, started, deadline
            )
            if stream is not None:
                return stream
        if not tried and cooling:
            position, target, key = cooling[0]
            stream, last_error = await self._attempt(
                plan, body, model, position, target, key, started, deadline
            )
            if stream is not None:
                return stream
        if last_error is None:
            raise UpstreamTimeout(f"no target of route {plan.name!r} answered in time")
        raise last_error

    async def _attempt(
        self,
        plan: RoutePlan,
        body: dict[str, Any],
        model: str,
        position: int,
        target: UpstreamTarget,
        key: str,
        started: float,
        deadline: float,
    ) -> tuple[UpstreamStream | None, UpstreamError | None]:
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            return None, UpstreamTimeout(f"no target of route {plan.name!r} answered in time")
        attempt = _Attempt(position, target, key, time.perf_counter())
        wait = min(target.first_token_timeout, remaining)
        try:
            stream = await self.client.open_stream(target, _body_for(target, body), wait)
        except UpstreamError as exc:
            has_next = position + 1 < len(plan.targets)
            return None, self._note_failure(exc, attempt, model, plan, has_next)
        return self._won(plan, stream, attempt, {}, started, False, model), None

    def _hedge_in(
        self,
        plan: RoutePlan,
        upcoming: list[tuple[int, UpstreamTarget]],
        running: dict[asyncio.Task[UpstreamStream], _Attempt],
    ) -> float | None:
        if plan.hedge_after_ms is None or not upcoming:
            return None
        newest = max(a.started for a in running.values())
        return max(0.0, newest + plan.hedge_after_ms / 1000 - time.perf_counter())

    async def _start_next(
        self,
        plan: RoutePlan,
        body: dict[str, Any],
        upcoming: list[tuple[int, UpstreamTarget]],
        running: dict[asyncio.Task[UpstreamStream], _Attempt],
        deadline: float,
        skipped: list[tuple[int, UpstreamTarget]],
        last_resort: bool = False,
    ) -> bool:
        """Start the next target not cooling down; False when none is left (or no time).

        ``last_resort``: when every target is cooling down, the first of them is tried
        all the same: a blip on a one-target route must not refuse its requests."""
        while upcoming:
            position, target = upcoming.pop(0)
            key = target_key(target.base_url, target.model)
            if await self.cooldowns.admit(key, target.first_token_timeout) is Admission.SKIP:
                skipped.append((position, target))
                if self.metrics is not None:
                    self.metrics.cooldown_skips.labels(plan.name, _label(target)).inc()
                continue
            return self._launch(body, position, target, key, running, deadline)
        if last_resort and skipped:
            position, target = skipped.pop(0)
            key = target_key(target.base_url, target.model)
            return self._launch(body, position, target, key, running, deadline)
        return False

    def _launch(
        self,
        body: dict[str, Any],
        position: int,
        target: UpstreamTarget,
        key: str,
        running: dict[asyncio.Task[UpstreamStream], _Attempt],
        deadline: float,
    ) -> bool:
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            return False
        wait = min(target.first_token_timeout, remaining)
        task = asyncio.ensure_future(self.client.open_stream(target, _body_for(target, body), wait))
        running[task] = _Attempt(position, target, key, time.perf_counter())
        return True

    def _won(
        self,
        plan: RoutePlan,
        stream: UpstreamStream,
        attempt: _Attempt,
        running: dict[asyncio.Task[UpstreamStream], _Attempt],
        started: float,
        hedged: bool,
        model: str,
    ) -> UpstreamStream:
        for other in running:
            if other.done() and not other.cancelled() and other.exception() is None:
                other.result().close()  # both answered at once: keep one
        now = time.perf_counter()
        stream.waited = now - started
        self.cooldowns.succeeded(attempt.key)
        if self.metrics is not None:
            self.metrics.time_to_first_token.labels(model).observe(now - attempt.started)
            if hedged:
                self.metrics.hedge_wins.labels(plan.name, _label(attempt.target)).inc()
        return stream

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        model = str(body.get("model", ""))
        plan = self.table.plan(model)
        if plan is None:
            return echo_completion(body)
        last_error: UpstreamError | None = None
        usable: list[tuple[int, UpstreamTarget, str]] = []
        for position, target in enumerate(plan.targets):
            key = target_key(target.base_url, target.model)
            probe_s = target.completion_timeout or target.first_token_timeout
            if await self.cooldowns.admit(key, probe_s) is Admission.SKIP:
                if self.metrics is not None:
                    self.metrics.cooldown_skips.labels(plan.name, _label(target)).inc()
                continue
            usable.append((position, target, key))
        if not usable:  # all cooling down: the first is tried all the same
            usable = [
                (0, plan.targets[0], target_key(plan.targets[0].base_url, plan.targets[0].model))
            ]
        for position, target, key in usable:
            attempt = _Attempt(position, target, key, time.perf_counter())
            try:
                response = await self.client.complete(target, _body_for(target, body))
            except UpstreamError as exc:
                has_next = (position, target, key) != usable[-1]
                last_error = self._note_failure(exc, attempt, model, plan, has_next)
                continue
            self.cooldowns.succeeded(key)
            usage = parse_usage(response.get("usage"))
            if usage is not None and self.metrics is not None:
                series = self.metrics.for_model(model)
                series.prompt_tokens.inc(usage.prompt_tokens)
                series.cached_tokens.inc(usage.cached_tokens)
            return response
        assert last_error is not None
        raise last_error

    def _note_failure(
        self, exc: UpstreamError, attempt: _Attempt, model: str, plan: RoutePlan, has_next: bool
    ) -> UpstreamError:
        if not exc.retryable:
            raise exc
        self.cooldowns.failed(attempt.key, plan.cooldown_seconds)
        if has_next:
            self.fallbacks += 1
            if self.metrics is not None:
                self.metrics.fallbacks.labels(model).inc()
            log.warning(
                "upstream target failed, trying the next one",
                extra={"target": attempt.target.base_url, "error": exc.message},
            )
        return exc


def _label(target: UpstreamTarget) -> str:
    """A target's metric label: its URL and model (configuration, so bounded)."""
    return f"{target.base_url} {target.model}" if target.model else target.base_url
