"""OpenTelemetry traces: one span per turn, child spans for its stages.

Off unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is
set. When off, nothing of OpenTelemetry is imported and each hook below costs one
context-variable read. When on, each app has its own ``TracerProvider`` (not the global
one, so that two apps in one process never share exporters), which exports over OTLP/HTTP
in a background thread; the other ``OTEL_*`` variables (headers, timeout, compression,
service name, resource attributes) are read by the SDK itself.

Attribute names follow the OpenTelemetry GenAI semantic conventions (``gen_ai.*``),
plus ``proxy.*`` ones for what they do not cover (task key, round, request id).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported only when tracing is on
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

Attributes = dict[str, str | int | float | bool]

# The tracer serving the current request (set by the access middleware on chat turns).
_tracer: ContextVar[Tracer | None] = ContextVar("proxy_tracer", default=None)


def traces_endpoint(endpoint: str | None, traces_endpoint: str | None) -> str | None:
    """The OTLP/HTTP traces URL, as the OTel spec derives it from the two variables."""
    if traces_endpoint:
        return traces_endpoint
    if endpoint:
        return endpoint.rstrip("/") + "/v1/traces"
    return None


class Tracing:
    """An app's tracer provider, or nothing at all when tracing is off."""

    def __init__(self, provider: TracerProvider | None = None) -> None:
        self._provider = provider
        self.tracer: Tracer | None = provider.get_tracer("voice-llm-proxy") if provider else None

    @classmethod
    def start(cls, url: str | None, service_version: str) -> Tracing:
        if not url:
            return cls()
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        # The SDK reads OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES; only its placeholder
        # name ("unknown_service") is replaced.
        resource = Resource.create({SERVICE_VERSION: service_version})
        if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
            resource = resource.merge(Resource({SERVICE_NAME: "voice-llm-proxy"}))
        provider = TracerProvider(resource=resource)
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)))
        _install_log_ids()
        logging.getLogger(__name__).info("exporting traces over OTLP/HTTP to %s", url)
        return cls(provider)

    @property
    def enabled(self) -> bool:
        return self.tracer is not None

    def close(self) -> None:
        if self._provider is not None:
            self._provider.shutdown()  # exports what is still batched

    @contextlib.contextmanager
    def turn(self, attributes: Attributes) -> Iterator[Span | None]:
        """The span of one chat request (named ``chat {model}`` once the model is known)."""
        if self.tracer is None:
            yield None
            return
        from opentelemetry.trace import SpanKind

        token = _tracer.set(self.tracer)
        try:
            with self.tracer.start_as_current_span(
                "chat", kind=SpanKind.SERVER, attributes=attributes
            ) as span:
                yield span
        finally:
            _tracer.reset(token)


@contextlib.contextmanager
def child(
    name: str, attributes: Attributes | None = None, *, client: bool = False
) -> Iterator[None]:
    """A stage of the current turn (no-op unless the turn is traced)."""
    tracer = _tracer.get()
    if tracer is None:
        yield
        return
    from opentelemetry.trace import SpanKind

    kind = SpanKind.CLIENT if client else SpanKind.INTERNAL
    with tracer.start_as_current_span(name, kind=kind, attributes=attributes):
        yield


def annotate(attributes: Attributes, *, name: str | None = None) -> None:
    """Add attributes to the current turn's span (and rename it)."""
    if _tracer.get() is None:
        return
    from opentelemetry import trace

    span = trace.get_current_span()
    span.set_attributes({k: v for k, v in attributes.items() if v is not None})
    if name is not None:
        span.update_name(name)


def finished_stage(name: str, duration_ms: float, attributes: Attributes) -> None:
    """A stage that ended just now and took ``duration_ms`` (e.g. one tool call)."""
    tracer = _tracer.get()
    if tracer is None:
        return
    import time

    end = time.time_ns()
    span = tracer.start_span(name, start_time=end - int(duration_ms * 1e6), attributes=attributes)
    span.end(end_time=end)


def current_ids() -> dict[str, str]:
    """``trace_id`` and ``span_id`` of the current span, for log lines (empty when off)."""
    if _tracer.get() is None:
        return {}
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    return {"trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}"}


class _TraceIds(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in current_ids().items():
            setattr(record, key, value)
        return True


def _install_log_ids() -> None:
    """Every log line written inside a traced turn carries its trace id."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _TraceIds) for f in handler.filters):
            handler.addFilter(_TraceIds())


def annotate_turn(
    *, model: str, task_key: str | None, app_id: str | None, key_name: str | None, body: Any
) -> None:
    """What the API layer knows of a turn once the body is read."""
    if _tracer.get() is None:
        return
    attributes: Attributes = {"gen_ai.request.model": model, "gen_ai.provider.name": "openai"}
    if task_key is not None:
        attributes["gen_ai.conversation.id"] = task_key
        attributes["proxy.task_key"] = task_key
    if app_id is not None:
        attributes["proxy.app_id"] = app_id
    if key_name is not None:
        attributes["proxy.key_name"] = key_name
    for field, name in (
        ("max_tokens", "gen_ai.request.max_tokens"),
        ("temperature", "gen_ai.request.temperature"),
        ("top_p", "gen_ai.request.top_p"),
    ):
        value = body.get(field) if isinstance(body, dict) else None
        if isinstance(value, int | float) and not isinstance(value, bool):
            attributes[name] = value
    attributes["proxy.stream"] = bool(isinstance(body, dict) and body.get("stream"))
    annotate(attributes, name=f"chat {model}")


def annotate_round(messages: list[Any], total_messages: int) -> None:
    """``proxy.round``: this turn's number in its task, when the whole history was loaded
    (a long task's window starts mid-way: the number would be wrong, so none is set)."""
    if _tracer.get() is None or len(messages) < total_messages:
        return
    turns = sum(1 for m in messages if m.role == "user" and m.source in ("turn", "seed"))
    annotate({"proxy.round": turns + 1})
