"""Prometheus metrics, one registry per app (no module globals).

Names follow the OpenTelemetry GenAI semantic conventions where they exist
(``gen_ai_client_operation_duration_seconds``, ``gen_ai_client_token_usage``,
``gen_ai_server_time_to_first_token_seconds``); the rest are ``proxy_*``.
Counters that other objects already keep (store errors, transcript write failures)
are read at scrape time, so they cost nothing on the request path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1)
TOKEN_BUCKETS = (16, 64, 256, 1024, 4096, 16384, 65536)
COUNT_BUCKETS = (0, 1, 2, 5, 10, 20, 50, 100, 200)


class _AttributeCounters(Collector):
    """Exposes counters that live as attributes on other objects."""

    def __init__(self) -> None:
        self.sources: list[tuple[str, str, dict[str, str], Callable[[], float]]] = []

    def collect(self) -> Iterable[Metric]:
        families: dict[str, CounterMetricFamily] = {}
        for name, documentation, labels, read in self.sources:
            family = families.get(name)
            if family is None:
                family = families[name] = CounterMetricFamily(
                    name, documentation, labels=list(labels)
                )
            family.add_metric(list(labels.values()), float(read()))
        return list(families.values())


class ProxyMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "proxy_requests",
            "Chat requests by route, model and status.",
            ["route", "model", "status"],
            registry=r,
        )
        self.operation_duration = Histogram(
            "gen_ai_client_operation_duration_seconds",
            "Whole chat operation time.",
            ["gen_ai_operation_name", "gen_ai_request_model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.time_to_first_token = Histogram(
            "gen_ai_server_time_to_first_token_seconds",
            "Upstream time to its first speakable event (text or a tool call).",
            ["gen_ai_request_model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.token_usage = Histogram(
            "gen_ai_client_token_usage",
            "Tokens per request as reported by the upstream.",
            ["gen_ai_token_type", "gen_ai_request_model"],
            buckets=TOKEN_BUCKETS,
            registry=r,
        )
        self.overhead = Histogram(
            "proxy_overhead_seconds",
            "Time spent in the proxy before the first byte, excluding the upstream's wait.",
            buckets=OVERHEAD_BUCKETS,
            registry=r,
        )
        self.chunk_gap = Histogram(
            "proxy_stream_chunk_gap_seconds",
            "Gaps between relayed chunks.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.active_streams = Gauge("proxy_active_streams", "Streams being relayed.", registry=r)
        self.history_turns = Histogram(
            "proxy_history_messages",
            "Stored messages placed in a prompt.",
            buckets=COUNT_BUCKETS,
            registry=r,
        )
        self.history_tokens = Histogram(
            "proxy_history_tokens",
            "Tokens of stored history placed in a prompt.",
            buckets=TOKEN_BUCKETS,
            registry=r,
        )
        self.fallbacks = Counter(
            "proxy_upstream_fallbacks",
            "A target failed before the first byte; the next was tried.",
            ["gen_ai_request_model"],
            registry=r,
        )
        self.interruptions = Counter(
            "proxy_interruptions", "Replies cut short by the caller leaving.", registry=r
        )
        self.replays = Counter(
            "proxy_replays", "Retried request ids answered from the store.", registry=r
        )
        self.retrieval_time = Histogram(
            "proxy_retrieval_seconds",
            "Knowledge retrieval time per turn.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tool_calls = Counter(
            "proxy_tool_calls", "Server-side tool calls.", ["tool", "outcome"], registry=r
        )
        self.callback_events = Counter(
            "proxy_callback_events", "Engine callbacks received.", ["event_type"], registry=r
        )
        self.engine_metric = Histogram(
            "proxy_engine_metric_milliseconds",
            "Metrics the engine reported (906).",
            ["metric"],
            buckets=(10, 25, 50, 100, 200, 400, 800, 1500, 3000, 6000),
            registry=r,
        )
        self.engine_errors = Counter(
            "proxy_engine_errors", "Errors the engine reported (908).", ["metric"], registry=r
        )
        # Issue 17: first speakable token, hedging, cooldown, prompt caching.
        self.hedges = Counter(
            "proxy_upstream_hedges",
            "A target had no speakable token by hedge_after_ms: this one was started too.",
            ["route", "target"],
            registry=r,
        )
        self.hedge_wins = Counter(
            "proxy_upstream_hedge_wins",
            "Hedged requests, by the target whose speakable token came first.",
            ["route", "target"],
            registry=r,
        )
        self.cooldown_skips = Counter(
            "proxy_upstream_cooldown_skips",
            "Requests that skipped a target cooling down after a failure.",
            ["route", "target"],
            registry=r,
        )
        self.prompt_tokens = Counter(
            "proxy_upstream_prompt_tokens",
            "Prompt tokens the upstreams reported.",
            ["gen_ai_request_model"],
            registry=r,
        )
        self.cached_prompt_tokens = Counter(
            "proxy_upstream_prompt_cache_hit_tokens",
            "Prompt tokens the upstreams served from their prompt cache "
            "(prompt_tokens_details.cached_tokens); divide by proxy_upstream_prompt_tokens.",
            ["gen_ai_request_model"],
            registry=r,
        )
        self._attributes = _AttributeCounters()
        r.register(self._attributes)

    def expose_counter(
        self, name: str, documentation: str, read: Callable[[], float], **labels: str
    ) -> None:
        """Publish a counter another object keeps (read at scrape time)."""
        self._attributes.sources.append((name, documentation, labels, read))
