"""Handling the engine's server callbacks: deduplicate, keep the task state true, record.

The engine retries a callback that is not answered within 5 s, so the reply comes
first: live-state updates are time-boxed, and the durable record is queued for the
write-behind ``CallbackEventWriter`` (batched, bounded, retried through an outage).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from proxy.context.history import HistoryStore
from proxy.db.base import utcnow, without_nul
from proxy.db.events import CallbackEventWriter, EventRecord
from proxy.db.spool import Spool
from proxy.errors import ServiceUnavailable
from proxy.metrics import ProxyMetrics
from proxy.voice import events as ev
from proxy.voice.events import EngineEvent
from proxy.voice.spoken import SpokenTextReconciler

log = logging.getLogger(__name__)

DEDUPE_SECONDS = 3600  # the engine stops retrying after a minute
MAX_HELD_EVENTS = 10_000  # events waiting for the database, at most (memory bound)
BATCH_SIZE = 200
FLUSH_SECONDS = 0.1  # under load batches gather while the previous one is written
RETRY_MAX_SECONDS = 5.0  # the longest pause between writes while the database is down
LATE_APPLY_FACTOR = 20  # a live-state update that missed its time box gets this much longer


def _when(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def event_record(event: EngineEvent, app_id: str | None) -> EventRecord:
    """The rows an accepted event writes: task fields, the event, a 906/908 metric."""
    fields: dict[str, Any] = {"room_id": event.room_id}
    if app_id:
        fields["app_id"] = app_id
    when = _when(event.event_ms_ts)
    if event.event_type == ev.TASK_STARTED:
        fields.update(status="active", started_at=when)
    elif event.event_type == ev.SESSION_READY:
        fields.update(status="ready")
    elif event.event_type == ev.TASK_STOPPED:
        leave = event.payload.get("LeaveCode")
        fields.update(status="ended", ended_at=when, end_reason=f"leave_code:{leave}")
    row = {
        "task_id": event.task_id,
        "event_type": event.event_type,
        "event_ms_ts": event.event_ms_ts,
        "round_id": event.round_id,
        "payload": without_nul(event.raw),
        "received_at": utcnow(),
    }
    metric = None
    if event.event_type in (ev.METRIC, ev.ERROR_METRIC):
        payload = event.payload
        value = payload.get("Value")
        metric = {
            "task_id": event.task_id,
            "round_id": event.round_id,
            "metric": without_nul(str(payload.get("Metric") or "unknown"))[:64],
            "value": float(value) if isinstance(value, int | float) else None,
            "tags": without_nul(payload.get("Tag") or {}),
        }
    task = {k: v for k, v in fields.items() if v is not None}
    return EventRecord(event.task_id, task=task, event=row, metric=metric)


LLM_TIMEOUT = 30200  # the engine's "LLM timeout": it gave up before a first token


def engine_gave_up(payload: dict[str, Any]) -> bool:
    """A 908 that says the engine spoke nothing of the round's reply (CONTRACT §2)."""
    tag = payload.get("Tag")
    code = tag.get("Code") if isinstance(tag, dict) else None
    return payload.get("Metric") == "llm_error" and str(code) == str(LLM_TIMEOUT)


class CallbackService:
    def __init__(
        self,
        store: HistoryStore,
        sessions: async_sessionmaker[AsyncSession],
        spoken: SpokenTextReconciler,
        *,
        closed_ttl_seconds: int,
        timeout_seconds: float,
        metrics: ProxyMetrics | None = None,
        queue_size: int = MAX_HELD_EVENTS,
        batch_size: int = BATCH_SIZE,
        flush_seconds: float = FLUSH_SECONDS,
        retry_max_seconds: float = RETRY_MAX_SECONDS,
        write_lock: asyncio.Lock | None = None,
        spool: Spool | None = None,
    ) -> None:
        self._store = store
        self._spoken = spoken
        self._closed_ttl = closed_ttl_seconds
        self._timeout = timeout_seconds
        self._metrics = metrics or ProxyMetrics()
        self.writer = CallbackEventWriter(
            sessions,
            queue_size=queue_size,
            batch_size=batch_size,
            flush_seconds=flush_seconds,
            retry_max_seconds=retry_max_seconds,
            write_lock=write_lock,
            spool=spool,
        )
        self._later: set[asyncio.Task[None]] = set()  # live-state updates applied late
        self.received: Counter[int] = Counter()
        self.duplicates = 0

    @property
    def persist_failures(self) -> int:
        """Failed database writes (each retried) and events dropped from a full buffer."""
        return self.writer.failed_writes + self.writer.dropped

    async def start(self) -> None:
        await self.writer.start()

    async def handle(self, event: EngineEvent, app_id: str | None) -> str:
        """Returns "duplicate" or "accepted"; ServiceUnavailable when the event could not
        be recorded (the engine retries: an acknowledged callback is never lost)."""
        if not self.writer.accepting:
            log.error(
                "callback %d refused: its record cannot be queued now",
                event.event_type,
                extra={"task_id": event.task_id},
            )
            raise ServiceUnavailable("callback events cannot be recorded now; retry")
        if not await self._first_time(event):
            self.duplicates += 1
            return "duplicate"
        self.received[event.event_type] += 1
        self._observe(event)
        received = time.time()  # an erasure of the task after this refuses its live writes
        try:
            async with asyncio.timeout(self._timeout * 4):
                await self._update_live_state(event, received)
        except Exception as exc:  # never fail the callback on the live store
            # It is deduplicated already, so the engine's retry would not bring it back:
            # applied again off the reply path (applying twice changes nothing more).
            log.warning("callback %d not applied yet: %r", event.event_type, exc)
            self._spawn(self._apply_later(event, received))
        self.writer.submit(event_record(event, app_id))  # accepting was checked above
        return "accepted"

    def _observe(self, event: EngineEvent) -> None:
        metrics = self._metrics
        metrics.callback_events.labels(str(event.event_type)).inc()
        name = str(event.payload.get("Metric") or "unknown")
        if event.event_type == ev.METRIC and isinstance(event.payload.get("Value"), int | float):
            metrics.engine_metric.labels(name).observe(event.payload["Value"])
        elif event.event_type == ev.ERROR_METRIC:
            metrics.engine_errors.labels(name).inc()

    async def _first_time(self, event: EngineEvent) -> bool:
        try:
            async with asyncio.timeout(self._timeout):
                return await self._store.mark_once(event.dedupe_key, DEDUPE_SECONDS)
        except Exception:
            return True  # the database's unique key still deduplicates the record

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._later.add(task)
        task.add_done_callback(self._later.discard)

    async def _apply_later(self, event: EngineEvent, received: float) -> None:
        await asyncio.sleep(self._timeout)
        try:
            async with asyncio.timeout(self._timeout * LATE_APPLY_FACTOR):
                await self._update_live_state(event, received)
        except Exception as exc:
            log.error(
                "callback %d not applied to live state: %r",
                event.event_type,
                exc,
                extra={"task_id": event.task_id},
            )

    async def _update_live_state(self, event: EngineEvent, received: float) -> None:
        if event.event_type == ev.SPEAKING_FINISHED:
            text = event.payload.get("Text")
            if isinstance(text, str):
                outcome = await self._spoken.on_spoken(
                    event.task_id, text, at=event.event_ms_ts / 1000, received_at=received
                )
                log.info("905 %s", outcome, extra={"task_id": event.task_id})
        elif event.event_type == ev.ERROR_METRIC and engine_gave_up(event.payload):
            outcome = await self._spoken.on_gave_up(
                event.task_id, at=event.event_ms_ts / 1000, received_at=received
            )
            log.info("908 llm timeout: %s", outcome, extra={"task_id": event.task_id})
        elif event.event_type == ev.TASK_STOPPED:
            await self._store.expire(event.task_id, self._closed_ttl)

    async def drain(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Graceful shutdown: write what is queued (retrying within ``timeout``), then stop."""
        if self._later:
            await asyncio.wait(list(self._later), timeout=timeout)
        await self.writer.close(timeout)
