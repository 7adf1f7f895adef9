"""Write-behind persistence, never awaited on the request path, and durable once accepted.

``submit`` appends the submission to the process's local spool (``proxy.db.spool``: one
SQLite transaction, survives a crash) and to an in-memory window of the oldest
submissions; a background task writes the window in batches, one database transaction
per batch, in submission order, and deletes a batch from the spool only once its
transaction has committed. So what a caller was told is recorded is on disk until the
database has it: a database outage, a SIGTERM during it, or a ``kill -9`` costs nothing
but disk, and the next start replays the spool. Memory stays bounded by
``queue_size``: beyond it, submissions wait in the spool only and are read back in
order as the window drains. Without a spool (unit tests, ``PROXY_SPOOL_DIR=off``) the
window is the queue, and a full window refuses.

Records that answer nobody (usage rows, turn logs: ``acknowledged = False``) are
spooled in groups instead: every submission of ``GROUP_SECONDS`` in one spool
transaction (a few a second under load, not one per request or per event-loop
iteration: each is a SQLite commit on the event loop). A ``kill -9`` within that window
could lose them, nothing later; a shutdown, ``flush`` and ``close`` spool them at once.

A batch the database refuses as invalid is retried one submission at a time, so that
only the bad submission is discarded. Rows of an erased task (``proxy.db.erasure``)
are discarded inside the writing transaction. Every submission not recorded (queue
full, refused by the database, erased) is counted in ``refused`` by reason and logged
with its task.

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
from collections import Counter, deque
from dataclasses import dataclass
from itertools import islice
from typing import Generic, Protocol, Self, TypeVar

from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from proxy.db.erasure import erased_tasks
from proxy.db.spool import Spool

REFUSAL_LOG_INTERVAL = 10.0  # seconds; at most REFUSAL_LOG_BURST lines per interval
REFUSAL_LOG_BURST = 50
DEFAULT_SPOOL_MAX_ITEMS = 1_000_000  # on disk; each item is one turn or one callback
# With a spool, stopping loses nothing: a shutdown waits this long at most for the
# database (several queues close one after the other within the orchestrator's grace).
SPOOLED_CLOSE_SECONDS = 2.0
GROUP_SECONDS = 0.1  # unacknowledged submissions: how long one spool transaction gathers


@dataclass(frozen=True, slots=True)
class QueueConfig:
    """What every write-behind queue of a process shares: its sizes, the SQLite write
    lock and the spool (built once, from the settings)."""

    queue_size: int
    batch_size: int
    flush_seconds: float
    write_lock: asyncio.Lock | None = None
    spool: Spool | None = None


class Record(Protocol):
    """What a write-behind submission carries: its task, and when it was accepted."""

    task_id: str
    at: float  # epoch seconds; an erasure at or after this discards it


Item = TypeVar("Item", bound=Record)


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
    """A durable queue of submissions and the task that writes them in batches."""

    what = "item"  # what a submission is, in log lines ("transcript write failed")
    queue_name = "item"  # its rows in the spool
    # A caller is told its submission is recorded (a callback's 200, a turn's reply):
    # spooled before ``submit`` returns. False: spooled with the rest of its group.
    acknowledged = True

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        queue_size: int = 10_000,
        batch_size: int = 200,
        flush_seconds: float = 0.5,
        retry_max_seconds: float = 5.0,
        write_lock: asyncio.Lock | None = None,
        spool: Spool | None = None,
        spool_max_items: int = DEFAULT_SPOOL_MAX_ITEMS,
    ) -> None:
        self.sessions = sessions
        self.write_lock = write_lock
        self.spool = spool
        self.spool_max_items = spool_max_items
        self.queue_size, self.batch_size = queue_size, batch_size
        self.flush_seconds, self.retry_max_seconds = flush_seconds, retry_max_seconds
        self.written = 0  # submissions committed
        self.failed_writes = 0  # failed transactions (each one is retried or isolated)
        self.refused: Counter[str] = Counter()  # not recorded, by reason
        self._log = logging.getLogger(type(self).__module__)
        # The oldest submissions (spool id, item); they leave only once committed.
        self._buffer: deque[tuple[int, Item]] = deque()
        self._spooled = 0  # submissions in the spool (the buffer's and those beyond it)
        self._spilled = False  # the spool holds submissions beyond the buffer
        self._read_upto = 0  # the last spool id placed in the buffer
        self._has_items = asyncio.Event()  # the buffer is not empty
        self._kick = asyncio.Event()  # write now: a full batch, flush() or close()
        self._drained = asyncio.Event()  # nothing pending: everything is committed
        self._drained.set()
        self._closed = False
        self._task: asyncio.Task[None] | None = None
        self._delay = 0.0  # current retry backoff
        self._isolate = 0  # after a rejected batch: write this many items one at a time
        self._log_window, self._log_lines, self._log_suppressed = 0.0, 0, 0
        self._grouped: list[Item] = []  # accepted, not spooled yet (unacknowledged)

    @classmethod
    def from_config(cls, sessions: async_sessionmaker[AsyncSession], config: QueueConfig) -> Self:
        return cls(
            sessions,
            queue_size=config.queue_size,
            batch_size=config.batch_size,
            flush_seconds=config.flush_seconds,
            write_lock=config.write_lock,
            spool=config.spool,
        )

    @property
    def dropped(self) -> int:
        """Submissions refused because the queue was full (or closed, without a spool)."""
        return self.refused["full"] + self.refused["closed"]

    @property
    def rejected(self) -> int:
        """Submissions the database refused as invalid (discarded)."""
        return self.refused["rejected"]

    @property
    def accepting(self) -> bool:
        """A submission now would be accepted (callers that must not acknowledge what
        cannot be recorded ask first)."""
        if self.spool is not None:
            return self._spooled < self.spool_max_items
        return not self._closed and len(self._buffer) < self.queue_size

    @property
    def pending(self) -> int:
        """Submissions accepted and not yet committed (including the batch in flight)."""
        return self._spooled if self.spool is not None else len(self._buffer)

    # What subclasses provide ------------------------------------------------------------

    async def _write(self, session: AsyncSession, batch: list[Item]) -> None:
        """Write ``batch`` inside the open transaction (raising leaves it queued)."""
        raise NotImplementedError

    def _encode(self, item: Item) -> bytes:
        raise NotImplementedError

    def _decode(self, body: bytes) -> Item:
        raise NotImplementedError

    # Accepting ----------------------------------------------------------------------------

    def _put(self, item: Item) -> bool:
        """Accept a submission (durably, with a spool); False if refused (counted, logged)."""
        if self.spool is None:
            if self._closed:
                return self._refuse("closed", item)
            if len(self._buffer) >= self.queue_size:
                return self._refuse("full", item)
            self._buffer.append((0, item))
        else:
            # Closed (shutting down) still spools: the next start writes it.
            if self._spooled >= self.spool_max_items:
                return self._refuse("full", item)
            self._spooled += 1
            if not self.acknowledged:
                if not self._grouped:
                    asyncio.get_running_loop().call_later(GROUP_SECONDS, self._spool_group)
                self._grouped.append(item)
                self._drained.clear()
                return True
            self._queue(self.spool.append(self.queue_name, self._encode(item)), item)
        self._has_items.set()
        self._drained.clear()
        if len(self._buffer) >= self.batch_size:
            self._kick.set()
        return True

    def _queue(self, spool_id: int, item: Item) -> None:
        """A spooled submission joins the window (or stays in the spool only)."""
        if self._spilled or len(self._buffer) >= self.queue_size or self._closed:
            self._spilled = True
        else:
            self._buffer.append((spool_id, item))
            self._read_upto = spool_id

    def _spool_group(self) -> None:
        """Spool the unacknowledged submissions gathered so far, in one transaction."""
        group, self._grouped = self._grouped, []
        if not group or self.spool is None:
            return
        try:
            ids = self.spool.append_many(self.queue_name, [self._encode(i) for i in group])
        except Exception as exc:  # a full disk: counted like a full queue
            self._log.error("%s spool write failed: %r", self.what, exc)
            self._spooled -= len(group)
            for item in group:
                self._refuse("full", item)
            if not self._spooled:
                self._drained.set()
            return
        for spool_id, item in zip(ids, group, strict=True):
            self._queue(spool_id, item)
        self._has_items.set()
        self._drained.clear()  # the writer may have found the window empty meanwhile
        if len(self._buffer) >= self.batch_size:
            self._kick.set()

    def _refuse(self, reason: str, item: Item) -> bool:
        self.refused[reason] += 1
        self._log_refusal(reason, item.task_id)
        return False

    def _log_refusal(self, reason: str, task_id: str) -> None:
        now = time.monotonic()
        if now - self._log_window >= REFUSAL_LOG_INTERVAL:
            if self._log_suppressed:
                self._log.warning(
                    "%s not recorded: %d more refusal(s) not logged",
                    self.what,
                    self._log_suppressed,
                )
            self._log_window, self._log_lines, self._log_suppressed = now, 0, 0
        if self._log_lines >= REFUSAL_LOG_BURST:
            self._log_suppressed += 1
            return
        self._log_lines += 1
        self._log.warning("%s not recorded (%s)", self.what, reason, extra={"task_id": task_id})

    # Running ----------------------------------------------------------------------------

    async def start(self) -> None:
        if self.spool is not None and not self._buffer:
            self._spooled = self.spool.count(self.queue_name)
            self._spilled = self._spooled > 0
            if self._spooled:
                self._drained.clear()
                self._log.warning(
                    "%s: %d spooled submission(s) from an earlier run; writing them",
                    self.what,
                    self._spooled,
                )
                self._refill()
        if self._task is None or self._task.done():
            name = f"{self.what.replace(' ', '-')}-writer"
            self._task = asyncio.create_task(self._run(), name=name)

    def _refill(self) -> None:
        """Read the next spooled submissions, in order, into the buffer."""
        assert self.spool is not None
        room = self.queue_size - len(self._buffer)
        if not self._spilled or room <= 0:
            return
        rows = self.spool.read(self.queue_name, self._read_upto, room)
        for spool_id, body in rows:
            self._buffer.append((spool_id, self._decode(body)))
            self._read_upto = spool_id
        if len(rows) < room:
            self._spilled = False  # the spool holds nothing beyond the buffer now
        if self._buffer:
            self._has_items.set()

    async def flush(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Wait until everything submitted so far is committed; TimeoutError otherwise."""
        self._spool_group()
        if self._buffer and (self._task is None or self._task.done()):
            raise RuntimeError(f"{self.what} writer is not running")
        self._kick.set()
        await asyncio.wait_for(self._drained.wait(), timeout)

    async def close(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Stop the writer once what is queued is written (retrying within ``timeout``).

        With a spool, what is left stays on disk for the next start, so the wait is short."""
        if self.spool is not None:
            timeout = min(timeout, SPOOLED_CLOSE_SECONDS)
        self._spool_group()
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
        if self.pending and self.spool is not None:
            self._log.warning(
                "%s writer stopped: %d submission(s) stay in the spool %s for the next start",
                self.what,
                self.pending,
                self.spool.path,
            )
        elif self.pending:
            self._log.error(
                "%s writer closed: %d submission(s) not written", self.what, self.pending
            )

    async def _run(self) -> None:
        while not (self._closed and not self._buffer and not self._spilled):
            if not self._buffer:
                if self.spool is not None and self._spilled:
                    self._refill()
                    continue
                if not self._spilled:
                    self._drained.set()
                self._has_items.clear()
                await self._has_items.wait()
                continue
            if len(self._buffer) < self.batch_size and not self._kick.is_set():
                with contextlib.suppress(TimeoutError):  # let a batch gather
                    await asyncio.wait_for(self._kick.wait(), self.flush_seconds)
            self._kick.clear()
            while self._buffer:
                await self._write_head()
                if self.spool is not None and len(self._buffer) < self.batch_size:
                    self._refill()
            if not self._spilled:
                self._drained.set()

    async def _write_head(self) -> None:
        """Commit the oldest batch, or keep it for a retry after a backoff."""
        batch = [item for _, item in islice(self._buffer, 1 if self._isolate else self.batch_size)]
        erased: list[Item] = []
        try:
            async with (
                self.write_lock or contextlib.nullcontext(),
                self.sessions() as session,
                session.begin(),
            ):
                tombstones = await erased_tasks(session, {item.task_id for item in batch})
                kept: list[Item] = []
                for item in batch:
                    erased_at = tombstones.get(item.task_id)
                    (erased if erased_at is not None and item.at <= erased_at else kept).append(
                        item
                    )
                if kept:
                    await self._write(session, kept)
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
                self._log.error(
                    "%s submission rejected (%s); discarded",
                    self.what,
                    error_name(exc),
                    extra={"task_id": batch[0].task_id},
                )
                self._refuse("rejected", batch[0])
                self._consume(1)
            return
        if self._delay:
            self._log.warning("%s writes resumed; %d pending", self.what, self.pending - len(batch))
            self._delay = 0.0
        for item in erased:  # the task was erased after it was accepted: erasure wins
            self._refuse("erased", item)
        self.written += len(batch) - len(erased)
        self._consume(len(batch))

    def _consume(self, count: int) -> None:
        done = [self._buffer.popleft()[0] for _ in range(count)]
        if self.spool is not None:
            self.spool.delete(done)
            self._spooled -= count
        self._isolate = max(0, self._isolate - count)
