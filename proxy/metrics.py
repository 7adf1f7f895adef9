"""Prometheus metrics, one registry per app (no module globals).

Names follow the OpenTelemetry GenAI semantic conventions where they exist
(``gen_ai_client_operation_duration_seconds``, ``gen_ai_client_token_usage``,
``gen_ai_server_time_to_first_token_seconds``); the rest are ``proxy_*``.
Counters that other objects already keep (store errors, transcript write failures)
are read at scrape time, so they cost nothing on the request path.

Every label value comes from a closed set, capped in length (``bounded_label``): a
client-chosen string (the ``model`` of a request, a callback's metric name, a tool the
model named) never becomes a series of its own unless it is configured. Anything else
is ``other``. So the size of ``/metrics`` does not depend on what clients send.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1)
TOKEN_BUCKETS = (16, 64, 256, 1024, 4096, 16384, 65536)
COUNT_BUCKETS = (0, 1, 2, 5, 10, 20, 50, 100, 200)

OTHER = "other"  # the label value of everything outside a closed set
MAX_LABEL_LENGTH = 64
# The engine's callback vocabulary (CONTRACT section 5): 906/908 metric names, event types.
ENGINE_METRICS = frozenset(
    {
        "asr_latency",
        "llm_network_latency",
        "llm_first_token",
        "tts_network_latency",
        "tts_first_frame_latency",
        "tts_discontinuity",
        "interruption",
        "asr_error",
        "llm_error",
        "tts_error",
    }
)
EVENT_TYPES = frozenset({"901", "902", "903", "904", "905", "906", "908", "909"})
STATUSES = frozenset(str(code) for code in range(100, 600))
ROUTES = frozenset(
    {"/v1/chat/completions", "/chat/completions", "/v1/responses", "/retell/llm-websocket"}
)
OUTCOMES = frozenset({"ok", "error"})
MAX_SPARE_LABELS = 32  # first-seen values admitted where no configuration names them


def bounded_label(value: object, allowed: Collection[str] | None = None) -> str:
    """A label value from a closed set: ``value`` if ``allowed`` holds it (or no set is
    given), else ``other``; at most ``MAX_LABEL_LENGTH`` characters either way."""
    text = value if isinstance(value, str) else str(value)
    if allowed is not None and text not in allowed:
        return OTHER
    return text[:MAX_LABEL_LENGTH]


class LabelSet:
    """The values one label may take: the configured ones (a callable, so that routes
    added at run time count), and up to ``spare`` first-seen others."""

    def __init__(self, known: Collection[str] = (), *, spare: int = 0) -> None:
        self._known = frozenset(known)
        self._dynamic: Callable[[], Collection[str]] | None = None
        self._spare = spare
        self._seen: set[str] = set()

    def allow(
        self, known: Collection[str], dynamic: Callable[[], Collection[str]] | None = None
    ) -> None:
        """Name the configured values: a fixed set, and a callable read at each use
        (routes added through the admin API)."""
        self._known, self._dynamic = frozenset(known), dynamic

    def close(self, value: object) -> str:
        text = value if isinstance(value, str) else str(value)
        if (
            text in self._known
            or text in self._seen
            or (self._dynamic is not None and text in self._dynamic())
        ):
            return text[:MAX_LABEL_LENGTH]
        if len(self._seen) < self._spare and len(text) <= MAX_LABEL_LENGTH:
            self._seen.add(text)
            return text
        return OTHER


M = TypeVar("M", Counter, Histogram)


class ClosedLabels(Generic[M]):
    """A labelled metric whose ``labels(...)`` closes every value through its LabelSet.

    The children are kept by their closed values (a bounded set, like the series):
    prometheus_client's own lookup takes a lock and re-validates the values, about
    4 µs, and the hot path asks several times per request."""

    def __init__(self, metric: M, *label_sets: LabelSet) -> None:
        self.metric: M = metric
        self.label_sets = label_sets
        self._children: dict[tuple[str, ...], M] = {}

    def labels(self, *values: object) -> M:
        if len(values) != len(self.label_sets):
            raise ValueError(f"expected {len(self.label_sets)} label values, got {len(values)}")
        closed = tuple(map(LabelSet.close, self.label_sets, values))
        child = self._children.get(closed)
        if child is None:
            child = self._children[closed] = self.metric.labels(*closed)
        return child


class LoopHistogram(Collector):
    """An unlabelled histogram observed only on the event loop's thread, without a lock:
    prometheus_client's takes two per observation (about 2 µs), and the relay observes
    every chunk of every stream. A scrape reads one snapshot of the counts, so the
    ``+Inf`` bucket always equals ``_count``."""

    def __init__(
        self, name: str, documentation: str, buckets: Iterable[float], registry: CollectorRegistry
    ) -> None:
        self.name, self.documentation = name, documentation
        self._bounds = [*sorted(float(b) for b in buckets), math.inf]
        self._counts = [0] * len(self._bounds)
        self._sum = 0.0
        registry.register(self)

    def observe(self, value: float) -> None:
        self._counts[bisect_left(self._bounds, value)] += 1  # le: the first bound >= value
        self._sum += value

    def collect(self) -> Iterable[Metric]:
        counts, total = list(self._counts), self._sum
        cumulative, buckets = 0, []
        for bound, count in zip(self._bounds, counts, strict=True):
            cumulative += count
            buckets.append((floatToGoString(bound), float(cumulative)))
        family = HistogramMetricFamily(self.name, self.documentation)
        family.add_metric([], buckets, total)
        yield family


class _AttributeCounters(Collector):
    """Exposes counters that live as attributes on other objects."""

    def __init__(self) -> None:
        self.sources: list[tuple[str, str, dict[str, str], Callable[[], float]]] = []

    def collect(self) -> Iterable[Metric]:
        # Sources with the same name and labels are one series: their counts add up
        # (a scrape never repeats a series).
        totals: dict[str, dict[tuple[str, ...], float]] = {}
        shapes: dict[str, tuple[str, list[str]]] = {}
        for name, documentation, labels, read in self.sources:
            shapes.setdefault(name, (documentation, list(labels)))
            series = totals.setdefault(name, {})
            values = tuple(labels.values())
            series[values] = series.get(values, 0.0) + float(read())
        families = []
        for name, series in totals.items():
            documentation, label_names = shapes[name]
            family = CounterMetricFamily(name, documentation, labels=label_names)
            for values, total in series.items():
                family.add_metric(list(values), total)
            families.append(family)
        return families


@dataclass(frozen=True, slots=True)
class ModelSeries:
    """The series of one model that every finished chat stream updates, found once."""

    duration: Histogram  # gen_ai_client_operation_duration_seconds (chat)
    input_tokens: Histogram  # gen_ai_client_token_usage
    output_tokens: Histogram
    prompt_tokens: Counter  # proxy_upstream_prompt_tokens
    cached_tokens: Counter  # proxy_upstream_prompt_cache_hit_tokens


class ProxyMetrics:
    def __init__(self, models: Collection[str] = ()) -> None:
        """``models``: the model names that are labels of their own (configured routes
        and models: see ``models.allow``); every other name is ``other``."""
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.models = LabelSet(models)
        model, route, status = self.models, LabelSet(ROUTES), LabelSet(STATUSES)
        self.requests = ClosedLabels(
            Counter(
                "proxy_requests",
                "Chat requests by route, model and status.",
                ["route", "model", "status"],
                registry=r,
            ),
            route,
            model,
            status,
        )
        self.operation_duration = ClosedLabels(
            Histogram(
                "gen_ai_client_operation_duration_seconds",
                "Whole chat operation time.",
                ["gen_ai_operation_name", "gen_ai_request_model"],
                buckets=LATENCY_BUCKETS,
                registry=r,
            ),
            LabelSet({"chat"}),
            model,
        )
        self.time_to_first_token = ClosedLabels(
            Histogram(
                "gen_ai_server_time_to_first_token_seconds",
                "Upstream time to its first speakable event (text or a tool call).",
                ["gen_ai_request_model"],
                buckets=LATENCY_BUCKETS,
                registry=r,
            ),
            model,
        )
        self.token_usage = ClosedLabels(
            Histogram(
                "gen_ai_client_token_usage",
                "Tokens per request as reported by the upstream.",
                ["gen_ai_token_type", "gen_ai_request_model"],
                buckets=TOKEN_BUCKETS,
                registry=r,
            ),
            LabelSet({"input", "output"}),
            model,
        )
        self.overhead = LoopHistogram(
            "proxy_overhead_seconds",
            "Time spent in the proxy before the first byte, excluding the upstream's wait.",
            buckets=OVERHEAD_BUCKETS,
            registry=r,
        )
        self.chunk_gap = LoopHistogram(
            "proxy_stream_chunk_gap_seconds",
            "Gaps between relayed chunks.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.active_streams = Gauge("proxy_active_streams", "Streams being relayed.", registry=r)
        self.history_turns = LoopHistogram(
            "proxy_history_messages",
            "Stored messages placed in a prompt.",
            buckets=COUNT_BUCKETS,
            registry=r,
        )
        self.history_tokens = LoopHistogram(
            "proxy_history_tokens",
            "Tokens of stored history placed in a prompt.",
            buckets=TOKEN_BUCKETS,
            registry=r,
        )
        self.fallbacks = ClosedLabels(
            Counter(
                "proxy_upstream_fallbacks",
                "A target failed before the first byte; the next was tried.",
                ["gen_ai_request_model"],
                registry=r,
            ),
            model,
        )
        self.interruptions = Counter(
            "proxy_interruptions", "Replies cut short by the caller leaving.", registry=r
        )
        self.replays = Counter(
            "proxy_replays", "Retried request ids answered from the store.", registry=r
        )
        self.turns_not_recorded = Counter(
            "proxy_turns_not_recorded",
            "Answered turns the history does not hold, by reason (a closed set).",
            ["reason"],
            registry=r,
        )
        self.retrieval_time = Histogram(
            "proxy_retrieval_seconds",
            "Knowledge retrieval time per turn.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        # Tools are registered by the operator, but the name comes from the model's call.
        self.tool_calls = ClosedLabels(
            Counter("proxy_tool_calls", "Server-side tool calls.", ["tool", "outcome"], registry=r),
            LabelSet(spare=MAX_SPARE_LABELS),
            LabelSet(OUTCOMES),
        )
        engine_metric = LabelSet(ENGINE_METRICS)
        self.callback_events = ClosedLabels(
            Counter(
                "proxy_callback_events", "Engine callbacks received.", ["event_type"], registry=r
            ),
            LabelSet(EVENT_TYPES),
        )
        self.engine_metric = ClosedLabels(
            Histogram(
                "proxy_engine_metric_milliseconds",
                "Metrics the engine reported (906).",
                ["metric"],
                buckets=(10, 25, 50, 100, 200, 400, 800, 1500, 3000, 6000),
                registry=r,
            ),
            engine_metric,
        )
        self.engine_errors = ClosedLabels(
            Counter(
                "proxy_engine_errors", "Errors the engine reported (908).", ["metric"], registry=r
            ),
            engine_metric,
        )
        # First speakable token, hedging, cooldown, prompt caching. Route names are
        # configured or the caller's model (closed like models); targets are configured.
        target = LabelSet(spare=MAX_SPARE_LABELS)
        self.hedges = ClosedLabels(
            Counter(
                "proxy_upstream_hedges",
                "A target had no speakable token by hedge_after_ms: this one was started too.",
                ["route", "target"],
                registry=r,
            ),
            model,
            target,
        )
        self.hedge_wins = ClosedLabels(
            Counter(
                "proxy_upstream_hedge_wins",
                "Hedged requests, by the target whose speakable token came first.",
                ["route", "target"],
                registry=r,
            ),
            model,
            target,
        )
        self.cooldown_skips = ClosedLabels(
            Counter(
                "proxy_upstream_cooldown_skips",
                "Requests that skipped a target cooling down after a failure.",
                ["route", "target"],
                registry=r,
            ),
            model,
            target,
        )
        self.prompt_tokens = ClosedLabels(
            Counter(
                "proxy_upstream_prompt_tokens",
                "Prompt tokens the upstreams reported.",
                ["gen_ai_request_model"],
                registry=r,
            ),
            model,
        )
        self.cached_prompt_tokens = ClosedLabels(
            Counter(
                "proxy_upstream_prompt_cache_hit_tokens",
                "Prompt tokens the upstreams served from their prompt cache "
                "(prompt_tokens_details.cached_tokens); divide by proxy_upstream_prompt_tokens.",
                ["gen_ai_request_model"],
                registry=r,
            ),
            model,
        )
        # By the closed model label: bounded like the series themselves.
        self._model_series: dict[str, ModelSeries] = {}
        self._attributes = _AttributeCounters()
        r.register(self._attributes)

    def expose_counter(
        self, name: str, documentation: str, read: Callable[[], float], **labels: str
    ) -> None:
        """Publish a counter another object keeps (read at scrape time)."""
        self._attributes.sources.append((name, documentation, labels, read))

    def for_model(self, model: str) -> ModelSeries:
        """``model``'s series: one label lookup instead of one per series."""
        closed = self.models.close(model)
        series = self._model_series.get(closed)
        if series is None:
            series = self._model_series[closed] = ModelSeries(
                self.operation_duration.labels("chat", model),
                self.token_usage.labels("input", model),
                self.token_usage.labels("output", model),
                self.prompt_tokens.labels(model),
                self.cached_prompt_tokens.labels(model),
            )
        return series
