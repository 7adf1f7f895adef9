"""Handling the engine's server callbacks: deduplicate, keep the task state true, record.

The engine retries a callback that is not answered within 5 s, so the reply comes
first: live-state updates are time-boxed, durable writes happen in the background.
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
from proxy.db.base import without_nul
from proxy.db.repositories import EventRepository, TaskRepository
from proxy.metrics import ProxyMetrics
from proxy.voice import events as ev
from proxy.voice.events import EngineEvent
from proxy.voice.spoken import SpokenTextReconciler

log = logging.getLogger(__name__)

DEDUPE_SECONDS = 3600  # the engine stops retrying after a minute
PERSIST_FOR_SECONDS = 600.0  # keep retrying a database write this long (an outage)
PERSIST_BACKOFF_MAX = 5.0
MAX_HELD_EVENTS = 10_000  # events waiting for the database, at most (memory bound)


def _when(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


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
    ) -> None:
        self._store = store
        self._sessions = sessions
        self._spoken = spoken
        self._closed_ttl = closed_ttl_seconds
        self._timeout = timeout_seconds
        self._metrics = metrics or ProxyMetrics()
        self._background: set[asyncio.Task[None]] = set()
        self.received: Counter[int] = Counter()
        self.duplicates = 0
        self.persist_failures = 0

    async def handle(self, event: EngineEvent, app_id: str | None) -> str:
        """Returns "duplicate" or "accepted"."""
        if not await self._first_time(event):
            self.duplicates += 1
            return "duplicate"
        self.received[event.event_type] += 1
        self._observe(event)
        try:
            async with asyncio.timeout(self._timeout * 4):
                await self._update_live_state(event)
        except Exception as exc:  # never fail the callback on the live store
            log.error("callback %d not applied to live state: %r", event.event_type, exc)
        if len(self._background) >= MAX_HELD_EVENTS:
            self.persist_failures += 1
            log.error(
                "too many callback events waiting for the database; %s not stored", event.dedupe_key
            )
        else:
            task = asyncio.create_task(self._persist(event, app_id))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
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

    async def _update_live_state(self, event: EngineEvent) -> None:
        if event.event_type == ev.SPEAKING_FINISHED:
            text = event.payload.get("Text")
            if isinstance(text, str):
                outcome = await self._spoken.on_spoken(
                    event.task_id, text, at=event.event_ms_ts / 1000
                )
                log.info("905 %s", outcome, extra={"task_id": event.task_id})
        elif event.event_type == ev.TASK_STOPPED:
            await self._store.expire(event.task_id, self._closed_ttl)

    async def _persist(self, event: EngineEvent, app_id: str | None) -> None:
        """Write the event, retrying through a database outage (up to ten minutes)."""
        deadline = time.monotonic() + PERSIST_FOR_SECONDS
        delay = 0.2
        while True:
            try:
                async with self._sessions() as session, session.begin():
                    await self._write(session, event, app_id)
                return
            except Exception as exc:
                self.persist_failures += 1
                if time.monotonic() + delay > deadline:
                    log.error("callback event %s dropped after retries", event.dedupe_key)
                    return
                log.warning("callback event not stored yet (%s), retrying", type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, PERSIST_BACKOFF_MAX)

    async def _write(self, session: AsyncSession, event: EngineEvent, app_id: str | None) -> None:
        tasks, events = TaskRepository(session), EventRepository(session)
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
        await tasks.touch(event.task_id, **{k: v for k, v in fields.items() if v is not None})
        stored = await events.record(
            task_id=event.task_id,
            event_type=event.event_type,
            event_ms_ts=event.event_ms_ts,
            round_id=event.round_id,
            payload=without_nul(event.raw),
        )
        if stored and event.event_type in (ev.METRIC, ev.ERROR_METRIC):
            payload = event.payload
            value = payload.get("Value")
            await events.add_metric(
                task_id=event.task_id,
                round_id=event.round_id,
                metric=without_nul(str(payload.get("Metric") or "unknown"))[:64],
                value=float(value) if isinstance(value, int | float) else None,
                tags=without_nul(payload.get("Tag") or {}),
            )

    async def drain(self) -> None:
        if self._background:
            await asyncio.wait(list(self._background), timeout=5)
