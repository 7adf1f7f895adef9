"""Write-behind persistence of the durable transcript, never awaited on the request path.

``submit`` only appends to a bounded in-process buffer; a background task writes the
buffer in batches, one transaction per batch, in submission order. A database outage
costs nothing but memory: the batch stays at the head of the buffer and is retried with
exponential backoff, while new submissions keep being buffered (or dropped and counted
once the buffer is full).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import islice
from typing import Any

from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from proxy.context.call import CallContext
from proxy.context.history import StoredMessage
from proxy.db.base import without_nul
from proxy.db.repositories import TaskRepository, TranscriptRepository

log = logging.getLogger(__name__)

DROP_LOG_INTERVAL = 10.0  # seconds between "buffer full" warnings
MAX_ROWS_PER_STATEMENT = 500  # stays far below the drivers' bind-parameter limits


@dataclass(slots=True)
class _Item:
    task_id: str
    task: dict[str, Any] | None = None  # Task fields to touch (message items only)
    rows: list[dict[str, Any]] | None = None  # messages to upsert
    update: dict[str, Any] | None = None  # {"id", "content", "interrupted"}: a correction


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _row(task_id: str, m: StoredMessage) -> dict[str, Any]:
    return {
        "id": m.id,
        "task_id": task_id,
        "role": m.role,
        "content": without_nul(m.content),
        "name": without_nul(m.name),
        "tool_calls": without_nul(m.tool_calls),
        "tool_call_id": without_nul(m.tool_call_id),
        "request_id": without_nul(m.request_id),
        "interrupted": m.interrupted,
        "source": m.source,
        "created_at": _utc(m.created_at),
    }


def _rejected(exc: Exception) -> bool:
    """The database refused the data itself (SQLSTATE class 22/23): retrying cannot help."""
    if isinstance(exc, IntegrityError | DataError):
        return True
    code = getattr(getattr(exc, "orig", None), "sqlstate", None)
    return isinstance(code, str) and code[:2] in ("22", "23")


def _error_name(exc: Exception) -> str:
    """Exception type names only: SQLAlchemy messages embed the bound (user) content."""
    orig = getattr(exc, "orig", None)
    name = type(exc).__name__ + (f"/{type(orig).__name__}" if orig is not None else "")
    code = getattr(orig, "sqlstate", None)
    return f"{name} sqlstate={code}" if code else name


class TranscriptWriter:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        queue_size: int = 10_000,
        batch_size: int = 200,
        flush_seconds: float = 0.5,
        retry_max_seconds: float = 5.0,
    ) -> None:
        self.sessions = sessions
        self.queue_size, self.batch_size = queue_size, batch_size
        self.flush_seconds, self.retry_max_seconds = flush_seconds, retry_max_seconds
        self.written = 0  # submissions committed
        self.failed_writes = 0  # failed transactions (each one is retried or isolated)
        self.dropped = 0  # submissions refused because the buffer was full
        self.rejected = 0  # submissions the database refused as invalid (discarded)
        self._buffer: deque[_Item] = deque()  # items leave only once committed
        self._has_items = asyncio.Event()  # the buffer is not empty
        self._kick = asyncio.Event()  # write now: a full batch, flush() or close()
        self._drained = asyncio.Event()  # the buffer is empty: everything is committed
        self._drained.set()
        self._closed = False
        self._task: asyncio.Task[None] | None = None
        self._delay = 0.0  # current retry backoff
        self._isolate = 0  # after a rejected batch: write this many items one at a time
        self._drop_logged_at, self._drops_logged = -DROP_LOG_INTERVAL, 0

    @property
    def pending(self) -> int:
        """Submissions buffered and not yet committed (including the batch in flight)."""
        return len(self._buffer)

    def submit(
        self, call: CallContext, messages: list[StoredMessage], *, profile: str | None = None
    ) -> bool:
        """Queue a task's new messages; False if not queued (no task id, full, or closed)."""
        if call.task_id is None or not messages:
            return False
        known = {"app_id": call.app_id, "room_id": call.room_id, "user_id": call.user_id}
        task: dict[str, Any] = {k: v for k, v in known.items() if v is not None}
        if profile is not None:
            task["profile_name"] = profile
        task["last_activity_at"] = _utc(time.time())  # when it happened, not when written
        rows = [_row(call.task_id, m) for m in messages]
        return self._put(_Item(call.task_id, task=task, rows=rows))

    def submit_update(self, task_id: str, message_id: str, content: Any, interrupted: bool) -> bool:
        """Queue an in-place correction of a stored message (905), after what is queued."""
        update = {"id": message_id, "content": without_nul(content), "interrupted": interrupted}
        return self._put(_Item(task_id, update=update))

    def _put(self, item: _Item) -> bool:
        if self._closed:
            return False
        if len(self._buffer) >= self.queue_size:
            self.dropped += 1
            now = time.monotonic()
            if now - self._drop_logged_at >= DROP_LOG_INTERVAL:
                log.warning(
                    "transcript buffer full (%d): %d submission(s) dropped since last report",
                    self.queue_size,
                    self.dropped - self._drops_logged,
                )
                self._drop_logged_at, self._drops_logged = now, self.dropped
            return False
        self._buffer.append(item)
        self._has_items.set()
        self._drained.clear()
        if len(self._buffer) >= self.batch_size:
            self._kick.set()
        return True

    async def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="transcript-writer")

    async def flush(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Wait until everything submitted so far is committed; TimeoutError otherwise."""
        if self._buffer and (self._task is None or self._task.done()):
            raise RuntimeError("transcript writer is not running")
        self._kick.set()
        await asyncio.wait_for(self._drained.wait(), timeout)

    async def close(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Stop accepting, write what is left (retrying within ``timeout``), then stop."""
        self._closed = True
        self._kick.set()
        self._has_items.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        if self._buffer:
            log.error("transcript writer closed: %d submission(s) not written", self.pending)

    async def _run(self) -> None:
        while not (self._closed and not self._buffer):
            if not self._buffer:
                self._has_items.clear()
                await self._has_items.wait()
                continue
            if len(self._buffer) < self.batch_size and not self._kick.is_set():
                with contextlib.suppress(TimeoutError):  # let a batch gather
                    await asyncio.wait_for(self._kick.wait(), self.flush_seconds)
            self._kick.clear()
            while self._buffer:
                await self._write_head()
            self._drained.set()

    async def _write_head(self) -> None:
        """Commit the oldest batch, or keep it for a retry after a backoff."""
        batch = list(islice(self._buffer, 1 if self._isolate else self.batch_size))
        try:
            await self._write(batch)
        except Exception as exc:
            self.failed_writes += 1
            if not _rejected(exc):
                self._delay = min(self.retry_max_seconds, max(0.05, self._delay * 2))
                log.error(
                    "transcript write failed (%s); retry in %.2fs, %d pending",
                    _error_name(exc),
                    self._delay,
                    self.pending,
                )
                await asyncio.sleep(self._delay)
            elif len(batch) > 1:  # find the bad submission(s): one transaction each
                log.warning("transcript batch rejected (%s); isolating", _error_name(exc))
                self._isolate = len(batch)
            else:
                self.rejected += 1
                log.error(
                    "transcript submission rejected (%s) for task %s; discarded",
                    _error_name(exc),
                    batch[0].task_id,
                )
                self._consume(1)
            return
        if self._delay:
            log.warning("transcript writes resumed; %d pending", self.pending - len(batch))
            self._delay = 0.0
        self.written += len(batch)
        self._consume(len(batch))

    def _consume(self, count: int) -> None:
        for _ in range(count):
            self._buffer.popleft()
        self._isolate = max(0, self._isolate - count)

    async def _write(self, batch: list[_Item]) -> None:
        tasks: dict[str, dict[str, Any]] = {}
        for item in batch:
            if item.task is not None:
                tasks.setdefault(item.task_id, {}).update(item.task)
        async with self.sessions() as session, session.begin():
            task_repo, transcript = TaskRepository(session), TranscriptRepository(session)
            for task_id in sorted(tasks):  # a fixed lock order across writers
                await task_repo.touch(task_id, **tasks[task_id])
            rows: list[dict[str, Any]] = []  # consecutive new messages, in one statement
            ids: set[str] = set()
            for item in batch:
                for row in item.rows or ():
                    # Keep the order: an id seen again (a regenerated reply) waits its turn.
                    if row["id"] in ids or len(rows) >= MAX_ROWS_PER_STATEMENT:
                        await transcript.upsert(rows)
                        rows, ids = [], set()
                    rows.append(row)
                    ids.add(row["id"])
                if item.update is not None:  # after the rows queued before it
                    await transcript.upsert(rows)
                    rows, ids = [], set()
                    fields = dict(item.update)
                    await transcript.update(item.task_id, fields.pop("id"), **fields)
            await transcript.upsert(rows)
