"""The embedded history store: one process, no Redis.

Used when no Redis is configured. Everything runs on one event loop and no method
awaits inside a read-modify-write, so plain dicts are safe. Messages are copied on
the way in and on the way out: callers never share objects with the store.
"""

from __future__ import annotations

import copy
import dataclasses
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from proxy.context.history import (
    DEFAULT_LEASE_SECONDS,
    ERASURE_TOMBSTONE_SECONDS,
    PROBE_WINDOW,
    SUPERSEDED_KEPT,
    ClaimState,
    LeaseHeld,
    RequestClaim,
    SpokenOutcome,
    StoredAnswer,
    StoredMessage,
    TaskErased,
    TaskHistory,
    TurnStart,
)
from proxy.context.task_lookup import MAX_MATCHES, names_task

# A full scan for expired tasks runs at most this often (bounded by the TTL itself).
MAX_SWEEP_INTERVAL_SECONDS = 60.0


@dataclass(slots=True)
class _RequestMarker:
    state: str  # "streaming" | "done" | "interrupted"
    attempt_id: str
    answer: StoredAnswer | None = None
    stored: int = 0  # messages the last commit stored under this request id
    superseded: list[str] = field(default_factory=list)  # attempts taken over, newest last

    def supersede(self, attempt_id: str) -> str:
        """``attempt_id`` replaces the current attempt; returns the one replaced."""
        previous = self.attempt_id
        self.superseded = [*self.superseded, previous][-SUPERSEDED_KEPT:]
        self.attempt_id = attempt_id
        return previous


@dataclass(slots=True)
class _Task:
    expires_at: float
    messages: list[StoredMessage] = field(default_factory=list)
    summary: str | None = None
    markers: dict[str, _RequestMarker] = field(default_factory=dict)
    pending: list[dict[str, Any]] = field(default_factory=list)
    meta: list[dict[str, Any]] = field(default_factory=list)  # meta.info for the next reply
    leases: dict[str, float] = field(default_factory=dict)  # attempt id -> expiry (clock)

    def others_live(self, attempt_id: str | None, now: float) -> int:
        self.leases = {a: until for a, until in self.leases.items() if until > now}
        return sum(1 for attempt in self.leases if attempt != attempt_id)


def _tenant(task_key: str) -> str:
    """The app a task key belongs to ("" for a bare task id)."""
    app, sep, _ = task_key.partition(":")
    return app if sep else ""


class MemoryHistoryStore:
    """``HistoryStore`` in a dict: TTL after the last write, bounded task count.

    Bounded per tenant too: a tenant holds at most ``max_tasks_per_tenant`` tasks (its
    own least recently used one makes room), and when the store is full the tenant
    holding the most tasks gives one up. One tenant's 10,000 tasks never evict another
    tenant's history while that tenant holds fewer.
    """

    def __init__(
        self,
        ttl_seconds: int = 86400,
        max_tasks: int = 10000,
        *,
        max_tasks_per_tenant: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_seconds = ttl_seconds
        self.max_tasks = max_tasks
        self.max_tasks_per_tenant = max_tasks_per_tenant or max_tasks
        self.clock = clock  # replaceable so tests can move time forward
        self._tasks: OrderedDict[str, _Task] = OrderedDict()  # least recently used first
        # The same task keys by tenant, least recently used first.
        self._by_tenant: dict[str, OrderedDict[str, None]] = {}
        self._sweep_interval = min(float(ttl_seconds), MAX_SWEEP_INTERVAL_SECONDS)
        self._next_sweep = clock() + self._sweep_interval
        self._marks: OrderedDict[str, float] = OrderedDict()  # key -> expiry, oldest first
        self._counters: dict[str, tuple[int, float]] = {}  # key -> (count, window end)
        # Erased and reset tasks: when (wall clock), for ``ERASURE_TOMBSTONE_SECONDS``.
        self._erased = _Tombstones(max_tasks, clock)
        self._reset = _Tombstones(max_tasks, clock)

    @property
    def task_count(self) -> int:
        """Tasks held right now, expired ones not yet swept included."""
        return len(self._tasks)

    # Reads.

    async def load(self, task_id: str, limit: int) -> TaskHistory:
        task = self._find(task_id)
        if task is None:
            return TaskHistory(messages=[], summary=None, total_messages=0)
        newest = task.messages[-limit:] if limit > 0 else []
        return TaskHistory(
            messages=_copies(newest),
            summary=task.summary,
            total_messages=len(task.messages),
        )

    async def find_task_keys(self, task_id: str) -> list[str]:
        now = self.clock()
        found = [
            key
            for key, task in self._tasks.items()
            if names_task(key, task_id)
            and task.expires_at > now
            and (task.messages or task.summary is not None or task.markers)
        ]
        return sorted(found)[:MAX_MATCHES]

    # Writes.

    async def claim_request(
        self,
        task_id: str,
        request_id: str,
        attempt_id: str | None = None,
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        holder: str = "",
    ) -> RequestClaim:
        task = self._for_write(task_id)
        attempt_id = attempt_id or uuid.uuid4().hex
        marker = task.markers.get(request_id)
        claim = RequestClaim(ClaimState.NEW, attempt_id)
        if marker is None:
            task.markers[request_id] = _RequestMarker("streaming", attempt_id)
        elif marker.state == "done":
            answer = dataclasses.replace(marker.answer) if marker.answer else None
            claim = RequestClaim(ClaimState.REPLAY, attempt_id, answer=answer)
        elif marker.attempt_id != attempt_id:  # the same attempt again changes nothing
            was_streaming = marker.state == "streaming"
            previous = marker.supersede(attempt_id)
            task.leases.pop(previous, None)
            marker.state = "streaming"
            if was_streaming:
                claim = RequestClaim(ClaimState.TAKEOVER, attempt_id, previous_attempt_id=previous)
            else:
                claim = RequestClaim(ClaimState.RETRY, attempt_id)
        now = self.clock()
        if claim.state is not ClaimState.REPLAY:
            task.leases[attempt_id] = now + lease_seconds
        claim.pending_spoken = len(task.pending)
        claim.others_in_flight = task.others_live(attempt_id, now)
        return claim

    async def begin_turn(
        self,
        task_id: str,
        request_id: str | None,
        attempt_id: str,
        *,
        limit: int,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        holder: str = "",
        take_meta: bool = False,
    ) -> TurnStart:
        # One event loop and no await in between: atomic, as the Redis script.
        claim = None
        if request_id is not None:
            claim = await self.claim_request(
                task_id, request_id, attempt_id, lease_seconds=lease_seconds, holder=holder
            )
        history = await self.load(task_id, limit)
        meta = await self.take_meta(task_id) if take_meta else []
        return TurnStart(claim, history, meta)

    async def hold(
        self, task_id: str, attempt_id: str, lease_seconds: float, *, holder: str, create: bool
    ) -> int:
        task = self._find(task_id)
        if task is None and not create:
            return 0
        task = task or self._for_write(task_id)
        if create or attempt_id in task.leases:
            task.leases[attempt_id] = self.clock() + lease_seconds
        return len(task.pending)

    async def release(self, task_id: str, attempt_id: str) -> None:
        task = self._find(task_id)
        if task is not None:
            task.leases.pop(attempt_id, None)

    async def add_spoken(
        self,
        task_id: str,
        message: StoredMessage,
        item: dict[str, Any],
        *,
        after: str | None,
        started_at: float | None = None,
        settling: str | None = None,
    ) -> SpokenOutcome:
        if self._erased_since(task_id, started_at):
            return SpokenOutcome.ERASED
        task = self._find(task_id)
        if task is not None and task.others_live(settling, self.clock()):
            task.pending.append(copy.deepcopy(item))
            return SpokenOutcome.PENDING
        newest = task.messages[-1].id if task is not None and task.messages else None
        if newest != after:
            return SpokenOutcome.MOVED
        self._for_write(task_id).messages.append(copy.deepcopy(message))
        return SpokenOutcome.APPENDED

    async def commit_turn(
        self,
        task_id: str,
        request_id: str | None,
        attempt_id: str | None,
        messages: list[StoredMessage],
        *,
        answer: StoredAnswer | None,
        seed: list[StoredMessage] | None = None,
        retry: bool = False,
        adopt: bool = False,
        started_at: float | None = None,
    ) -> bool:
        if self._erased_since(task_id, started_at):
            raise TaskErased(f"task erased after this turn began: {task_id}")
        marker = None
        existing = self._find(task_id)
        if existing is not None and attempt_id is not None:
            existing.leases.pop(attempt_id, None)  # the lease ends here
        if request_id is not None:
            marker = existing.markers.get(request_id) if existing else None
            if marker is not None and marker.attempt_id == attempt_id:
                if marker.state != "streaming":
                    self._for_write(task_id)
                    return True  # this attempt's commit is recorded already
            elif attempt_id is None:
                return False
            elif marker is None:
                # No attempt of the request is known: its claim never ran (``adopt``),
                # or the store lost it (an eviction). This commit makes it, unless the
                # task was reset since the attempt began (not into the fresh task).
                if self._reset.since(task_id, started_at):
                    return False
                marker = _RequestMarker("streaming", attempt_id)
                self._for_write(task_id).markers[request_id] = marker
            elif not adopt:
                return False  # a newer attempt owns the request
            elif attempt_id in marker.superseded or marker.state == "done":
                return False  # a later attempt took this one over, or it finished
            elif marker.state == "interrupted":  # as a claim would have (RETRY)
                marker.supersede(attempt_id)
            elif existing is not None and existing.leases.get(marker.attempt_id, 0.0) > (
                self.clock()
            ):
                raise LeaseHeld(f"another attempt of request {request_id} holds a live lease")
            else:  # another attempt streamed it, and its owner died: adopted
                marker.supersede(attempt_id)
        elif messages and existing is not None:
            newest = existing.messages[-PROBE_WINDOW:]
            if any(m.id == messages[0].id for m in newest):
                self._for_write(task_id)
                return True  # an earlier try of this commit is recorded already
        task = self._for_write(task_id)
        if marker is not None and marker.stored:
            # An earlier attempt's turn (user message + partial reply) is replaced.
            task.messages = [m for m in task.messages if m.request_id != request_id]
        written: list[StoredMessage] = []
        if seed and not task.messages:
            written.extend(_copies(seed))
        written.extend(_copies(messages))
        task.messages.extend(written)
        if marker is not None:
            marker.state = "done" if answer is not None else "interrupted"
            marker.answer = dataclasses.replace(answer) if answer is not None else None
            marker.stored = sum(1 for m in written if m.request_id == request_id)
        return True

    async def append(self, task_id: str, messages: list[StoredMessage]) -> None:
        self._for_write(task_id).messages.extend(_copies(messages))

    async def update_message(
        self,
        task_id: str,
        message_id: str,
        *,
        content: Any,
        interrupted: bool,
        heard_at: float | None = None,
    ) -> bool:
        task = self._find(task_id)
        if task is None:
            return False
        for message in reversed(task.messages):  # the corrected message is almost always recent
            if message.id == message_id:
                message.content, message.interrupted = copy.deepcopy(content), interrupted
                message.tokens, message.heard_at = None, heard_at
                self._for_write(task_id)
                return True
        return False

    async def set_summary(self, task_id: str, summary: str, upto_message_id: str) -> bool:
        task = self._find(task_id)
        if task is None:
            return False
        for index in range(len(task.messages) - 1, -1, -1):
            if task.messages[index].id == upto_message_id:
                del task.messages[: index + 1]
                task.summary = summary
                self._for_write(task_id)
                return True
        return False

    async def reset(self, task_id: str) -> None:
        self._drop(task_id)
        self._reset.mark(task_id, time.time())

    async def erase(self, task_id: str, at: float) -> None:
        self._drop(task_id)
        self._erased.mark(task_id, at)

    def _erased_since(self, task_id: str, started_at: float | None) -> bool:
        """The task was erased at or after ``started_at`` (and the tombstone is live)."""
        return self._erased.since(task_id, started_at)

    async def expire(self, task_id: str, ttl_seconds: int) -> None:
        task = self._find(task_id)
        if task is None:
            return
        if ttl_seconds <= 0:
            self._drop(task_id)
        else:
            task.expires_at = self.clock() + ttl_seconds

    async def push_pending(
        self, task_id: str, item: dict[str, Any], *, started_at: float | None = None
    ) -> bool:
        if self._erased_since(task_id, started_at):
            return False
        self._for_write(task_id).pending.append(copy.deepcopy(item))
        return True

    async def take_pending(self, task_id: str) -> list[dict[str, Any]]:
        task = self._find(task_id)
        if task is None:
            return []
        items, task.pending = task.pending, []
        return items

    async def push_meta(self, task_id: str, metainfo: dict[str, Any]) -> None:
        self._for_write(task_id).meta.append(copy.deepcopy(metainfo))

    async def take_meta(self, task_id: str) -> list[dict[str, Any]]:
        task = self._find(task_id)
        if task is None:
            return []
        items, task.meta = task.meta, []
        return items

    async def mark_once(self, key: str, ttl_seconds: int) -> bool:
        now = self.clock()
        while self._marks and next(iter(self._marks.values())) <= now:
            self._marks.popitem(last=False)
        if self._marks.get(key, 0.0) > now:
            return False
        self._marks[key] = now + ttl_seconds
        self._marks.move_to_end(key)
        while len(self._marks) > self.max_tasks * 10:  # bounded, like the tasks
            self._marks.popitem(last=False)
        return True

    async def hit(self, key: str, window_seconds: int) -> int:
        now = self.clock()
        count, ends = self._counters.get(key, (0, 0.0))
        if ends <= now:
            count, ends = 0, now + window_seconds
            if len(self._counters) > self.max_tasks:  # bounded: forget finished windows
                self._counters = {k: v for k, v in self._counters.items() if v[1] > now}
        self._counters[key] = (count + 1, ends)
        return count + 1

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        self._tasks.clear()
        self._by_tenant.clear()

    # Bookkeeping.

    def _find(self, task_id: str) -> _Task | None:
        """The live task (marked as recently used), or None; drops it if expired."""
        task = self._tasks.get(task_id)
        if task is None:
            return None
        if task.expires_at <= self.clock():
            self._drop(task_id)
            return None
        self._tasks.move_to_end(task_id)
        self._by_tenant[_tenant(task_id)].move_to_end(task_id)
        return task

    def _for_write(self, task_id: str) -> _Task:
        """The task, created if needed, with its TTL restarted."""
        now = self.clock()
        self._maybe_sweep(now)
        task = self._find(task_id)
        if task is None:
            tenant = _tenant(task_id)
            own = self._by_tenant.setdefault(tenant, OrderedDict())
            while len(own) >= self.max_tasks_per_tenant:
                self._drop(next(iter(own)))  # the tenant's least recently used
            while len(self._tasks) >= self.max_tasks:
                largest = max(self._by_tenant.values(), key=len)
                self._drop(next(iter(largest)))
            task = self._tasks[task_id] = _Task(expires_at=0.0)
            self._by_tenant.setdefault(tenant, OrderedDict())[task_id] = None
        task.expires_at = now + self.ttl_seconds
        return task

    def _maybe_sweep(self, now: float) -> None:
        if now < self._next_sweep:
            return
        self._next_sweep = now + self._sweep_interval
        expired = [task_id for task_id, task in self._tasks.items() if task.expires_at <= now]
        for task_id in expired:
            self._drop(task_id)

    def _drop(self, task_id: str) -> None:
        if self._tasks.pop(task_id, None) is None:
            return
        tenant = _tenant(task_id)
        own = self._by_tenant[tenant]
        del own[task_id]
        if not own:
            del self._by_tenant[tenant]


def _copies(messages: list[StoredMessage]) -> list[StoredMessage]:
    return [copy.deepcopy(message) for message in messages]


class _Tombstones:
    """When each task was last erased (or reset), wall clock, kept
    ``ERASURE_TOMBSTONE_SECONDS``; bounded like the tasks (oldest dropped first)."""

    def __init__(self, bound: int, clock: Callable[[], float]) -> None:
        self._bound, self._clock = bound, clock
        self._at: OrderedDict[str, tuple[float, float]] = OrderedDict()  # (at, expiry)

    def mark(self, task_id: str, at: float) -> None:
        now = self._clock()
        while self._at and next(iter(self._at.values()))[1] <= now:
            self._at.popitem(last=False)
        earlier = self._at.pop(task_id, (at, 0.0))[0]
        self._at[task_id] = (max(at, earlier), now + ERASURE_TOMBSTONE_SECONDS)
        while len(self._at) > self._bound:
            self._at.popitem(last=False)

    def since(self, task_id: str, started_at: float | None) -> bool:
        """Marked at or after ``started_at`` (and the mark is live)."""
        stone = self._at.get(task_id) if started_at is not None else None
        return (
            stone is not None
            and started_at is not None
            and started_at <= stone[0]
            and stone[1] > self._clock()
        )
