"""Metric labels come from closed sets; a scrape never repeats a series."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from proxy.metrics import (
    LATENCY_BUCKETS,
    MAX_LABEL_LENGTH,
    OTHER,
    LabelSet,
    LoopHistogram,
    ProxyMetrics,
    bounded_label,
)


def series(metrics: ProxyMetrics, name: str) -> list[str]:
    text = generate_latest(metrics.registry).decode()
    return [line for line in text.splitlines() if line.startswith(name)]


def test_bounded_label() -> None:
    assert bounded_label("voice", {"voice"}) == "voice"
    assert bounded_label("anything", {"voice"}) == OTHER
    assert bounded_label("x" * 900_000) == "x" * MAX_LABEL_LENGTH
    assert bounded_label(905) == "905"


def test_model_names_outside_the_configuration_are_other() -> None:
    metrics = ProxyMetrics()
    routes = ["voice"]
    metrics.models.allow({"echo", "deepseek-chat"}, lambda: routes)
    for n in range(5000):
        metrics.requests.labels("/v1/chat/completions", f"model-{n}", 200).inc()
        metrics.time_to_first_token.labels(f"model-{n}").observe(0.1)
    metrics.requests.labels("/v1/chat/completions", "x" * 900_000, 200).inc()
    metrics.requests.labels("/v1/chat/completions", "voice", 200).inc()
    routes.append("added-later")  # a route added through the admin API
    metrics.requests.labels("/v1/chat/completions", "added-later", 200).inc()
    metrics.requests.labels("/evil/path", "deepseek-chat", "999").inc()
    assert series(metrics, "proxy_requests_total") == [
        'proxy_requests_total{model="other",route="/v1/chat/completions",status="200"} 5001.0',
        'proxy_requests_total{model="voice",route="/v1/chat/completions",status="200"} 1.0',
        'proxy_requests_total{model="added-later",route="/v1/chat/completions",status="200"} 1.0',
        'proxy_requests_total{model="deepseek-chat",route="other",status="other"} 1.0',
    ]
    assert len(generate_latest(metrics.registry)) < 20_000


def test_callback_driven_labels_are_closed() -> None:
    metrics = ProxyMetrics()
    for n in range(1000):
        metrics.engine_errors.labels(f"error-{n}").inc()
        metrics.engine_metric.labels(f"metric-{n}").observe(1)
        metrics.callback_events.labels(str(10_000 + n)).inc()
    metrics.engine_errors.labels("llm_error").inc()
    metrics.callback_events.labels("905").inc()
    assert series(metrics, "proxy_engine_errors_total") == [
        'proxy_engine_errors_total{metric="other"} 1000.0',
        'proxy_engine_errors_total{metric="llm_error"} 1.0',
    ]
    assert series(metrics, "proxy_callback_events_total") == [
        'proxy_callback_events_total{event_type="other"} 1000.0',
        'proxy_callback_events_total{event_type="905"} 1.0',
    ]


def test_a_spare_label_set_admits_a_few_first_seen_values() -> None:
    labels = LabelSet(spare=2)
    assert [labels.close(v) for v in ("a", "b", "c", "a", "y" * 100)] == [
        "a",
        "b",
        OTHER,
        "a",
        OTHER,
    ]


def test_counters_from_several_sources_are_one_series() -> None:
    metrics = ProxyMetrics()
    doc = "Store errors."
    metrics.expose_counter("proxy_store_errors", doc, lambda: 1, store="database")
    metrics.expose_counter("proxy_store_errors", doc, lambda: 2, store="database")
    metrics.expose_counter("proxy_store_errors", doc, lambda: 4, store="redis")
    metrics.expose_counter("proxy_store_errors", doc, lambda: 8, store="database")
    assert series(metrics, "proxy_store_errors_total") == [
        'proxy_store_errors_total{store="database"} 11.0',
        'proxy_store_errors_total{store="redis"} 4.0',
    ]


def test_a_loop_histogram_exposes_what_a_prometheus_histogram_would() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    fast = LoopHistogram("gap_seconds", "Gaps.", buckets=LATENCY_BUCKETS, registry=ours)
    reference = Histogram("gap_seconds", "Gaps.", buckets=LATENCY_BUCKETS, registry=theirs)
    for value in (0.0, 0.0005, 0.001, 0.0011, 0.01, 0.7, 30, 31, 1e9):
        fast.observe(value)
        reference.observe(value)

    def exposed(registry: CollectorRegistry) -> list[str]:
        lines = generate_latest(registry).decode().splitlines()
        return [line for line in lines if "gap_seconds_created" not in line]

    assert exposed(ours) == exposed(theirs)
