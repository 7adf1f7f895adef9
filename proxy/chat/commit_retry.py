"""Turn commits that timed out or failed transiently, retried in the background.

A commit can miss its time box (``PROXY_REDIS_TIMEOUT_MS``) when the process or Redis
is saturated, and may even land a moment later. Dropping it loses the turn; waiting
for it holds the reply. So it is retried here, off the request path:

- per task, in order: while a task has a commit waiting here, its later commits queue
  behind it, so turns never land out of order;
- with backoff, for a bounded time and number of attempts, holding at most
  ``max_pending`` commits (beyond that a turn is not recorded, and counted);
- idempotently: a retry is ``commit_turn(..., retry=True)``, which recognises an
  earlier try that landed after all (by its request marker, or by its first message's
  id) and does not write it again. A commit the store refuses (a newer attempt of the
  request took over) is dropped, as it would have been the first time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from proxy.context.guard import transient
from proxy.context.history import (
    HistoryStore,
    LeaseHeld,
    StoredAnswer,
    StoredMessage,
    TaskErased,
)
from proxy.metrics import ProxyMetrics, bounded_label

log = logging.getLogger(__name__)

RETRY_FOR_SECONDS = 30.0  # a Redis restart or failover fits; a later turn would not wait
MAX_ATTEMPTS = 12
MAX_PENDING = 1000  # commits held, across all tasks (memory bound)
FIRST_DELAY = 0.05
MAX_DELAY = 3.0
# Why an answered turn was not recorded (the ``reason`` label of
# ``proxy_turns_not_recorded``): a closed set.
NOT_RECORDED_REASONS = (
    "superseded",  # another attempt of the request owns it (it is recorded instead)
    "store_error",  # the store refused the turn (a configuration fault, not an outage)
    "gave_up",  # retried for RETRY_FOR_SECONDS or MAX_ATTEMPTS without landing
    "queue_full",  # MAX_PENDING commits were waiting already
    "shutdown",  # the process stopped before the commit landed
    "erased",  # the task was erased after the turn began (erasure is final)
)


def retryable(exc: BaseException) -> bool:
    """A commit that may land if made again: the store stalled, or another attempt's
    live lease must end first."""
    return transient(exc) or isinstance(exc, LeaseHeld)


@dataclass(slots=True)
class TurnCommit:
    """One ``commit_turn`` call, kept so that it can be made again."""

    task_id: str
    request_id: str | None
    attempt_id: str | None
    messages: list[StoredMessage]
    answer: StoredAnswer | None
    seed: list[StoredMessage] | None = None
    adopt: bool = False  # the attempt's claim timed out (see ``commit_turn``)
    started_at: float | None = None  # when the turn began (wall clock; erasure check)
    log_fields: dict[str, Any] = field(default_factory=dict)
    on_committed: Callable[[], None] | None = None  # what follows a recorded turn
    on_resolved: Callable[[], None] | None = None  # recorded, refused or given up
    deadline: float = 0.0
    attempts: int = 0

    def resolved(self) -> None:
        if self.on_resolved is not None:
            self.on_resolved()

    def send(self, history: HistoryStore, *, retry: bool) -> Awaitable[bool]:
        return history.commit_turn(
            self.task_id,
            self.request_id,
            self.attempt_id,
            self.messages,
            answer=self.answer,
            seed=self.seed,
            retry=retry,
            adopt=self.adopt,
            started_at=self.started_at,
        )


class CommitRetrier:
    def __init__(
        self,
        history: HistoryStore,
        *,
        attempt_timeout: float,
        retry_for: float = RETRY_FOR_SECONDS,
        max_attempts: int = MAX_ATTEMPTS,
        max_pending: int = MAX_PENDING,
        max_delay: float = MAX_DELAY,
        metrics: ProxyMetrics | None = None,
    ) -> None:
        self._history = history
        self._metrics = metrics
        self.attempt_timeout = attempt_timeout  # longer than a request's: nobody waits
        self.retry_for, self.max_attempts = retry_for, max_attempts
        self.max_pending, self.max_delay = max_pending, max_delay
        self.recorded = 0  # commits a retry recorded (or found recorded already)
        self.refused = 0  # the store refused them: a newer attempt owns the request
        self.lost = 0  # given up (time, attempts, an error that is not transient) or dropped
        self._queues: dict[str, deque[TurnCommit]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._closed = False

    @property
    def pending(self) -> int:
        return sum(len(queue) for queue in self._queues.values())

    def has_pending(self, task_id: str) -> bool:
        return task_id in self._queues

    def not_recorded(self, reason: str, commit: TurnCommit) -> None:
        """Count and log an answered turn the history will not hold (``reason``: one of
        ``NOT_RECORDED_REASONS``)."""
        if self._metrics is not None:
            self._metrics.turns_not_recorded.labels(
                bounded_label(reason, NOT_RECORDED_REASONS)
            ).inc()
        # A superseded attempt is the usual end of an abandoned one (its retry is recorded).
        level = logging.INFO if reason == "superseded" else logging.WARNING
        log.log(level, "turn not recorded (%s)", reason, extra=commit.log_fields)

    def submit(self, commit: TurnCommit) -> bool:
        """Retry ``commit`` in the background, after the task's commits already here."""
        if self._closed or self.pending >= self.max_pending:
            self.lost += 1
            commit.resolved()
            self.not_recorded("shutdown" if self._closed else "queue_full", commit)
            return False
        commit.deadline = time.monotonic() + self.retry_for
        self._queues.setdefault(commit.task_id, deque()).append(commit)
        if commit.task_id not in self._workers:
            worker = asyncio.create_task(self._run(commit.task_id), name="commit-retry")
            self._workers[commit.task_id] = worker
        return True

    async def settled(self, task_id: str, timeout: float) -> None:  # noqa: ASYNC109
        """Wait (at most ``timeout``) until the task has no commit waiting here."""
        worker = self._workers.get(task_id)
        if worker is not None and timeout > 0:
            await asyncio.wait({worker}, timeout=timeout)

    async def close(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Graceful shutdown: let waiting commits land within ``timeout``, then give up."""
        self._closed = True
        workers = list(self._workers.values())
        if workers:
            await asyncio.wait(workers, timeout=timeout)
        for worker in workers:
            worker.cancel()
        for worker in workers:
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        left = self.pending
        if left:
            self.lost += left
            log.error("shutting down: %d turn commit(s) not recorded", left)
            for queue in self._queues.values():
                for commit in queue:
                    commit.resolved()
                    self.not_recorded("shutdown", commit)
            self._queues.clear()

    async def _run(self, task_id: str) -> None:
        queue = self._queues[task_id]
        delay = FIRST_DELAY
        try:
            while queue:
                commit = queue[0]
                await asyncio.sleep(delay)  # a first retry at once would meet the same stall
                outcome = await self._attempt(commit)
                if outcome is None:  # failed, and may be tried again
                    delay = min(self.max_delay, delay * 2)
                    continue
                queue.popleft()
                commit.resolved()
                delay = FIRST_DELAY
                if outcome and commit.on_committed is not None:
                    commit.on_committed()
        finally:
            del self._workers[task_id]
            if not queue:
                del self._queues[task_id]

    async def _attempt(self, commit: TurnCommit) -> bool | None:
        """True: recorded; False: refused or given up; None: try again later."""
        commit.attempts += 1
        try:
            async with asyncio.timeout(self.attempt_timeout):
                committed = await commit.send(self._history, retry=True)
        except TaskErased:
            self.refused += 1
            self.not_recorded("erased", commit)
            return False
        except Exception as exc:
            last = commit.attempts >= self.max_attempts or time.monotonic() >= commit.deadline
            if retryable(exc) and not last:
                log.debug("turn commit retry %d failed: %r", commit.attempts, exc)
                return None
            self.lost += 1
            log.error(
                "turn not recorded after %d attempt(s): %r",
                commit.attempts + 1,
                exc,
                extra=commit.log_fields,
            )
            self.not_recorded("gave_up" if retryable(exc) else "store_error", commit)
            return False
        if not committed:
            self.refused += 1
            self.not_recorded("superseded", commit)
            return False
        self.recorded += 1
        log.info("turn recorded on retry %d", commit.attempts, extra=commit.log_fields)
        return True
