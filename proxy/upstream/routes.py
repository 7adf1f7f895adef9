"""Model routing: alias -> ordered targets, with fallback before the first byte.

A request is retried on the next target only while nothing has reached the caller:
connect errors, timeouts to the first event, 429 and 5xx. A 4xx from an upstream
(other than 429) is the request's fault and goes straight back to the caller.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Any, Protocol

import orjson

from proxy.errors import UpstreamError
from proxy.metrics import ProxyMetrics
from proxy.observability import tracing, turnlog
from proxy.settings import ECHO_MODEL, Settings, UpstreamTarget
from proxy.upstream.client import UpstreamClient
from proxy.upstream.echo import EchoStream, echo_completion

log = logging.getLogger(__name__)


class CompletionStream(Protocol):
    """What the relay consumes: an upstream stream or the echo model."""

    first_events: list[bytes]
    waited: float  # seconds spent waiting on upstreams before the first event

    def batches(self) -> AsyncIterator[list[bytes]]: ...

    def close(self) -> None: ...


class RouteTable:
    """Which targets serve a model name. ``None`` means the built-in echo model."""

    def __init__(self, settings: Settings) -> None:
        self._config_routes = {alias: route.targets for alias, route in settings.routes.items()}
        self._routes = dict(self._config_routes)
        default = settings.default_target()
        self._default = [default] if default else None

    def set_database_routes(self, routes: dict[str, list[UpstreamTarget]]) -> None:
        """Routes managed through the admin API; config-declared aliases win."""
        self._routes = {**routes, **self._config_routes}

    def resolve(self, model: str) -> list[UpstreamTarget] | None:
        if model == ECHO_MODEL and ECHO_MODEL not in self._routes:
            return None
        return self._routes.get(model, self._default)

    @property
    def aliases(self) -> list[str]:
        return list(self._routes)

    @property
    def default_target(self) -> UpstreamTarget | None:
        return self._default[0] if self._default else None

    @property
    def has_upstream(self) -> bool:
        return bool(self._routes or self._default)


def _body_for(target: UpstreamTarget, body: dict[str, Any]) -> bytes:
    if target.model and body.get("model") != target.model:
        body = {**body, "model": target.model}
    return orjson.dumps(body)


class UpstreamRouter:
    def __init__(
        self, client: UpstreamClient, table: RouteTable, metrics: ProxyMetrics | None = None
    ) -> None:
        self.client = client
        self.table = table
        self.metrics = metrics
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
        targets = self.table.resolve(model)
        if targets is None:
            return EchoStream(body)
        last_error: UpstreamError | None = None
        started = time.perf_counter()
        for position, target in enumerate(targets):
            attempt = time.perf_counter()
            try:
                stream = await self.client.open_stream(target, _body_for(target, body))
            except UpstreamError as exc:
                last_error = self._note_failure(exc, position, targets, model)
                continue
            now = time.perf_counter()
            stream.waited = now - started
            if self.metrics is not None:
                self.metrics.time_to_first_token.labels(model).observe(now - attempt)
            return stream
        assert last_error is not None
        raise last_error

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        targets = self.table.resolve(str(body.get("model", "")))
        if targets is None:
            return echo_completion(body)
        last_error: UpstreamError | None = None
        for position, target in enumerate(targets):
            try:
                return await self.client.complete(target, _body_for(target, body))
            except UpstreamError as exc:
                last_error = self._note_failure(exc, position, targets, str(body.get("model")))
        assert last_error is not None
        raise last_error

    def _note_failure(
        self, exc: UpstreamError, position: int, targets: list[UpstreamTarget], model: str
    ) -> UpstreamError:
        if not exc.retryable:
            raise exc
        if position + 1 < len(targets):
            self.fallbacks += 1
            if self.metrics is not None:
                self.metrics.fallbacks.labels(model).inc()
            log.warning(
                "upstream target failed, trying the next one",
                extra={"target": targets[position].base_url, "error": exc.message},
            )
        return exc
