"""Write-behind persistence, never awaited on the request path.

``submit`` only appends to a bounded in-process buffer; a background task writes the
buffer in batches, one transaction per batch, in submission order. A database outage
costs nothing but memory: the batch stays at the head of the buffer and is retried with
exponential backoff, while new submissions keep being buffered (or dropped and counted
once the buffer is full). A batch the database refuses as invalid is retried one
submission at a time, so that only the bad submission is discarded.

Subclasses say what a batch is in the database (``_write``) and how a submission is
queued (their own ``submit`` calling ``_put``); their module's logger is used.

Queues writing to one SQLite file share a ``write_lock``: SQLite has a single write
lock, and a transaction holds it across event-loop round trips, so on a saturated
loop one queue's batch would otherwise keep the other waiting past the busy timeout
("database is locked"). With the lock they take turns without failing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from itertools import islice
from typing import Generic, TypeVar

from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

DROP_LOG_INTERVAL = 10.0  # seconds between "buffer full" warnings

Item = TypeVar("Item")


def rejected(exc: Exception) -> bool:
    """The database refused the data itself (SQLSTATE class 22/23): retrying cannot help."""
    if isinstance(exc, IntegrityError | DataError):
        return True
    code = getattr(getattr(exc, "orig", None), "sqlstate", None)
    return isinstance(code, str) and code[:2] in ("22", "23")


def error_name(exc: Exception) -> str:
    """Exception type names only: SQLAlchemy messages embed the bound (user) content."""
    orig = getattr(exc, "orig", None)
    name = type(exc).__name__ + (f"/{type(orig).__name__}" if orig is not None else "")
    code = getattr(orig, "sqlstate", None)
    return f"{name} sqlstate={code}" if code else name


class WriteBehindQueue(Generic[Item]):
    """A bounded buffer of submissions and the task that writes them in batches."""

    what = "item"  # what a submission is, in log lines ("transcript write failed")

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        queue_size: int = 10_000,
        batch_size: int = 200,
        flush_seconds: float = 0.5,
        retry_max_seconds: float = 5.0,
        write_lock: asyncio.Lock | None = None,
    ) -> None:
        self.sessions = sessions
        self.write_lock = write_lock
        self.queue_size, self.batch_size = queue_size, batch_size
        self.flush_seconds, self.retry_max_seconds = flush_seconds, retry_max_seconds
        self.written = 0  # submissions committed
        self.failed_writes = 0  # failed transactions (each one is retried or isolated)
        self.dropped = 0  # submissions refused because the buffer was full
        self.rejected = 0  # submissions the database refused as invalid (discarded)
        self._log = logging.getLogger(type(self).__module__)
        self._buffer: deque[Item] = deque()  # items leave only once committed
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

    async def _write(self, batch: list[Item]) -> None:
        """Write ``batch`` in one transaction (raising leaves it buffered)."""
        raise NotImplementedError

    def _owner(self, item: Item) -> str:
        """Whose submission this is, for the log line when it is discarded."""
        return str(getattr(item, "task_id", "?"))

    def _put(self, item: Item) -> bool:
        if self._closed:
            return False
        if len(self._buffer) >= self.queue_size:
            self.dropped += 1
            now = time.monotonic()
            if now - self._drop_logged_at >= DROP_LOG_INTERVAL:
                self._log.warning(
                    "%s buffer full (%d): %d submission(s) dropped since last report",
                    self.what,
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
            name = f"{self.what.replace(' ', '-')}-writer"
            self._task = asyncio.create_task(self._run(), name=name)

    async def flush(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Wait until everything submitted so far is committed; TimeoutError otherwise."""
        if self._buffer and (self._task is None or self._task.done()):
            raise RuntimeError(f"{self.what} writer is not running")
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
            self._log.error(
                "%s writer closed: %d submission(s) not written", self.what, self.pending
            )

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
            async with self.write_lock or contextlib.nullcontext():
                await self._write(batch)
        except Exception as exc:
            self.failed_writes += 1
            if not rejected(exc):
                self._delay = min(self.retry_max_seconds, max(0.05, self._delay * 2))
                self._log.error(
                    "%s write failed (%s); retry in %.2fs, %d pending",
                    self.what,
                    error_name(exc),
                    self._delay,
                    self.pending,
                )
                await asyncio.sleep(self._delay)
            elif len(batch) > 1:  # find the bad submission(s): one transaction each
                self._log.warning("%s batch rejected (%s); isolating", self.what, error_name(exc))
                self._isolate = len(batch)
            else:
                self.rejected += 1
                self._log.error(
                    "%s submission rejected (%s) for task %s; discarded",
                    self.what,
                    error_name(exc),
                    self._owner(batch[0]),
                )
                self._consume(1)
            return
        if self._delay:
            self._log.warning("%s writes resumed; %d pending", self.what, self.pending - len(batch))
            self._delay = 0.0
        self.written += len(batch)
        self._consume(len(batch))

    def _consume(self, count: int) -> None:
        for _ in range(count):
            self._buffer.popleft()
        self._isolate = max(0, self._isolate - count)
