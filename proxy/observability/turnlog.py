"""A durable record of each turn for the console's timeline: what was sent, how long
each stage took, tools, meta.info, errors.

The access middleware opens a ``TurnLog`` for each chat request (a context variable, so
the stages deep in the pipeline reach it without being passed it: each hook below is a
no-op outside a chat request); the API layer names its task; at the end of the response
the middleware hands it to the write-behind ``TurnLogWriter`` (never awaited on the request
path). Only turns of a task are kept.
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from proxy.db.base import row_chunks, table_of, without_nul
from proxy.db.models import TurnRecord
from proxy.db.write_behind import WriteBehindQueue
from proxy.observability import tracing

MAX_TEXT = 16_000  # characters of sent text kept
MAX_ITEMS = 20  # tools and meta.info items kept per turn
MAX_ITEM_BYTES = 4_000


@dataclass(slots=True)
class TurnLog:
    request_id: str
    started_at: datetime
    task_key: str | None = None
    model: str | None = None
    upstream_ms: float | None = None  # wait for the upstream's first event
    first_byte_ms: float | None = None  # request received -> first byte to the caller
    sent: str | None = None  # the assistant text that reached the caller
    interrupted: bool = False
    replayed: bool = False
    tools: list[dict[str, Any]] = field(default_factory=list)
    meta: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None

    def row(self, status: int, total_ms: float) -> dict[str, Any]:
        outcome = (
            "replayed"
            if self.replayed
            else "failed"
            if status >= 400 or self.error
            else "interrupted"
            if self.interrupted
            else "answered"
        )
        proxy_ms = None
        if self.first_byte_ms is not None:
            proxy_ms = max(0.0, self.first_byte_ms - (self.upstream_ms or 0.0))
        return {
            "task_id": self.task_key,
            "request_id": self.request_id,
            "created_at": self.started_at,
            "model": (self.model or "")[:128] or None,
            "status": status,
            "outcome": outcome,
            "sent_text": without_nul(self.sent[:MAX_TEXT]) if self.sent is not None else None,
            "proxy_ms": _ms(proxy_ms),
            "upstream_ms": _ms(self.upstream_ms),
            "total_ms": _ms(total_ms),
            "tools": without_nul(self.tools[:MAX_ITEMS]),
            "meta": without_nul(self.meta[:MAX_ITEMS]),
            "error": without_nul(self.error[:2000]) if self.error else None,
        }


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


_current: ContextVar[TurnLog | None] = ContextVar("turn_log", default=None)


def begin(request_id: str) -> TurnLog:
    log = TurnLog(request_id=request_id, started_at=datetime.now(UTC))
    _current.set(log)
    return log


def identify(task_key: str | None, model: str) -> None:
    log = _current.get()
    if log is not None:
        log.task_key, log.model = task_key, model


def upstream_waited(seconds: float) -> None:
    log = _current.get()
    if log is not None and log.upstream_ms is None:  # the first step's wait
        log.upstream_ms = seconds * 1000


def tool_done(name: str, ok: bool, elapsed_ms: float) -> None:
    tracing.finished_stage(
        f"proxy.tool {name}", elapsed_ms, {"gen_ai.tool.name": name, "proxy.tool.ok": ok}
    )
    log = _current.get()
    if log is not None:
        log.tools.append({"name": name[:64], "ok": ok, "ms": round(elapsed_ms, 1)})


def meta_sent(metainfo: dict[str, Any]) -> None:
    log = _current.get()
    if log is not None and len(log.meta) < MAX_ITEMS:
        if len(orjson.dumps(metainfo, default=str)) <= MAX_ITEM_BYTES:
            log.meta.append(metainfo)
        else:
            log.meta.append({"truncated": True, "keys": sorted(map(str, metainfo))[:20]})


def replayed() -> None:
    log = _current.get()
    if log is not None:
        log.replayed = True


def sent(text: str, *, interrupted: bool) -> None:
    log = _current.get()
    if log is not None:
        log.sent, log.interrupted = text, interrupted


def failed(message: str) -> None:
    log = _current.get()
    if log is not None:
        log.error = message


@dataclass(slots=True)
class _Record:
    task_id: str
    row: dict[str, Any]
    at: float = field(default_factory=time.time)  # an erasure of the task after it wins


class TurnLogWriter(WriteBehindQueue[_Record]):
    what = "turn log"
    queue_name = "turn_log"
    acknowledged = False  # nobody waits on it: spooled per loop iteration

    def submit(self, log: TurnLog, status: int, total_ms: float) -> bool:
        if log.task_key is None:
            return False
        return self._put(_Record(log.task_key, log.row(status, total_ms)))

    def _encode(self, item: _Record) -> bytes:
        return orjson.dumps(item)  # a dataclass, natively: asdict deep-copies (~100 µs)

    def _decode(self, body: bytes) -> _Record:
        item = _Record(**orjson.loads(body))
        item.row["created_at"] = datetime.fromisoformat(item.row["created_at"])
        return item

    async def _write(self, session: AsyncSession, batch: list[_Record]) -> None:
        for chunk in row_chunks([item.row for item in batch]):
            await session.execute(insert(table_of(TurnRecord)), list(chunk))
