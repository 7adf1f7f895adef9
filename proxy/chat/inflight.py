"""A task's turns in flight on this replica, in one owner: ``InFlight``.

``InFlight`` holds, per task, everything a new turn of the task must wait for or end:

- the turns being served (their asyncio tasks): a new turn ends the earlier ones, and a
  retry of a request takes over the attempt still streaming it;
- the interrupted turns being written in the background;
- the commits being retried (``CommitRetrier``: per task, in order);
- the leases of the replies in flight (``LeaseKeeper``), which the store shows to every
  replica.

The store keeps the one record of a task's replies in flight (``HistoryStore.hold``),
visible to every replica: a 905 waits only while a reply of its task is in flight, and
a commit that has to adopt a request (its claim is unknown) may take over an attempt
only once that attempt's lease has ended. A lease lives ``lease_seconds`` and this
keeper refreshes every lease it holds a few times per lease, from one loop, until the
reply's commit resolves. So a live replica never loses a lease, and a killed one's
leases end within ``lease_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Coroutine
from typing import Any

from proxy.chat.commit_retry import CommitRetrier
from proxy.context.guard import StoreGuard
from proxy.context.history import DEFAULT_LEASE_SECONDS, HistoryStore
from proxy.metrics import ProxyMetrics

log = logging.getLogger(__name__)

REFRESHES_PER_LEASE = 4


def replica_id() -> str:
    """Who holds a lease: readable in the store (host, process), unique per start."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class LeaseKeeper:
    def __init__(
        self, store: HistoryStore, guard: StoreGuard, *, lease_seconds: float, holder: str
    ) -> None:
        self._store = store
        self._guard = guard
        self.lease_seconds = lease_seconds
        self.holder = holder
        self._held: dict[tuple[str, str], bool] = {}  # (task, attempt) -> registered yet
        self._loop: asyncio.Task[None] | None = None

    @property
    def held(self) -> int:
        return len(self._held)

    def keep(self, task_id: str, attempt_id: str, *, registered: bool) -> None:
        """Hold the lease of ``attempt_id`` until ``drop``; ``registered``: the claim
        made it already (else the next refresh creates it, off the request path)."""
        self._held[(task_id, attempt_id)] = registered
        if not registered:
            self._spawn_refresh(task_id, attempt_id, create=True)
        if self._loop is None or self._loop.done():
            self._loop = asyncio.create_task(self._refresh_all(), name="lease-keeper")

    def drop(self, task_id: str, attempt_id: str) -> None:
        """The reply's commit resolved (the store ended the lease) or will never come."""
        self._held.pop((task_id, attempt_id), None)

    async def release(self, task_id: str, attempt_id: str) -> None:
        """End a lease the store still holds: the reply will not be committed."""
        self.drop(task_id, attempt_id)
        await self._guard(self._store.release(task_id, attempt_id))

    async def _refresh_all(self) -> None:
        interval = self.lease_seconds / REFRESHES_PER_LEASE
        while self._held:
            await asyncio.sleep(interval)
            await asyncio.gather(
                *(
                    self._refresh(task_id, attempt_id, create=False)
                    for task_id, attempt_id in list(self._held)
                )
            )

    def _spawn_refresh(self, task_id: str, attempt_id: str, *, create: bool) -> None:
        task = asyncio.create_task(self._refresh(task_id, attempt_id, create=create))
        task.add_done_callback(_ignore_result)

    async def _refresh(self, task_id: str, attempt_id: str, *, create: bool) -> None:
        if (task_id, attempt_id) not in self._held:
            return
        await self._guard(
            self._store.hold(
                task_id, attempt_id, self.lease_seconds, holder=self.holder, create=create
            )
        )

    async def close(self) -> None:
        self._held.clear()
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop


class InFlight:
    """This replica's turns in flight, per task (see the module's docstring)."""

    def __init__(self, leases: LeaseKeeper, retries: CommitRetrier, *, wait_seconds: float) -> None:
        self.leases = leases
        self.retries = retries
        self.wait_seconds = wait_seconds  # how long a new turn waits for earlier ones
        # task -> (request id or attempt id -> the asyncio task serving that turn): a new
        # turn looks at its own task's turns only, however many are in flight here.
        self._turns: dict[str, dict[str, asyncio.Task[Any]]] = {}
        self._writes: dict[str, asyncio.Task[None]] = {}  # task -> interrupted turn's write

    @classmethod
    def for_replica(
        cls,
        store: HistoryStore,
        guard: StoreGuard,
        metrics: ProxyMetrics | None = None,
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,  # ``PROXY_LEASE_SECONDS``
    ) -> InFlight:
        leases = LeaseKeeper(store, guard, lease_seconds=lease_seconds, holder=replica_id())
        # A retry waits longer than a request would: nobody is waiting for it.
        retries = CommitRetrier(store, attempt_timeout=max(1.0, 4 * guard.timeout), metrics=metrics)
        return cls(leases, retries, wait_seconds=guard.timeout)

    # Turns being served.

    @property
    def turns(self) -> int:
        """Stateful turns being served here (each is forgotten when it ends)."""
        return sum(len(turns) for turns in self._turns.values())

    async def make_way(self, task_id: str, request_id: str | None) -> None:
        """Before a new turn of the task reads its history: earlier turns end, and their
        writes land (briefly waited for)."""
        await self.end_earlier(task_id, request_id)
        await self.settled(task_id)

    async def end_earlier(self, task_id: str, request_id: str | None) -> None:
        """A new turn means the engine moved on: a reply of this task still streaming here
        was abandoned (its caller may have left a moment ago and the disconnect not been
        seen yet). End it first, so that its interrupted turn is written before this turn
        reads the history. Requests without a request id count too: a client's retry after
        its own timeout must find the abandoned attempt's user turn stored, not race it."""
        earlier = [
            owner
            for key, owner in self._turns.get(task_id, {}).items()
            if key != request_id and not owner.done()
        ]
        for owner in earlier:
            owner.cancel()
        if earlier:
            await asyncio.wait(earlier, timeout=self.wait_seconds)

    def take_over(self, task_id: str, request_id: str) -> None:
        """A retry of ``request_id`` owns the request now: the attempt still streaming it
        here ends."""
        earlier = self._drop(task_id, request_id)
        if earlier is not None and not earlier.done():
            log.info("a retry takes over a request still streaming", extra={"task_id": task_id})
            earlier.cancel()

    def register(
        self, task_id: str, key: str, attempt_id: str, *, claimed: bool
    ) -> asyncio.Task[Any] | None:
        """The current asyncio task serves this turn until ``forget``; its lease is kept
        (``claimed``: the claim created it already). ``key``: the request id, else the
        attempt id. Returns the owner, to cancel on takeover."""
        self.leases.keep(task_id, attempt_id, registered=claimed)
        owner = asyncio.current_task()
        if owner is not None:  # every turn in flight, so that the next one can end it
            self._turns.setdefault(task_id, {})[key] = owner
        return owner

    def forget(self, task_id: str, key: str, owner: asyncio.Task[Any] | None) -> None:
        if self._turns.get(task_id, {}).get(key) is owner:
            self._drop(task_id, key)

    def _drop(self, task_id: str, key: str) -> asyncio.Task[Any] | None:
        turns = self._turns.get(task_id)
        owner = turns.pop(key, None) if turns is not None else None
        if turns is not None and not turns:
            del self._turns[task_id]
        return owner

    # Writes and commits.

    def write_in_background(self, task_id: str, write: Coroutine[Any, Any, None]) -> None:
        """An interrupted turn's write: the task's next turn waits for it (``settled``)."""
        task = asyncio.create_task(write)
        self._writes[task_id] = task

        def forget(done: asyncio.Task[None]) -> None:
            if self._writes.get(task_id) is done:
                del self._writes[task_id]

        task.add_done_callback(forget)

    async def settled(self, task_id: str) -> None:
        """Wait (briefly) for an interrupted turn of the task still being written, and
        for its commits being retried."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_seconds
        pending = self._writes.get(task_id)
        if pending is not None:
            await asyncio.wait({pending}, timeout=self.wait_seconds)
        await self.retries.settled(task_id, deadline - loop.time())

    # Leases.

    def lease_over(self, task_id: str, attempt_id: str) -> None:
        """The reply's commit resolved (the store ended the lease) or will never come."""
        self.leases.drop(task_id, attempt_id)

    def release(self, task_id: str, attempt_id: str) -> None:
        """The turn ends without a commit (an error before the reply): its lease too."""
        task = asyncio.ensure_future(self.leases.release(task_id, attempt_id))
        task.add_done_callback(lambda done: done.cancelled() or done.exception())

    async def drain(self) -> None:
        """Graceful shutdown: background writes and commit retries land (or give up)."""
        if self._writes:
            await asyncio.wait(set(self._writes.values()), timeout=5)
        await self.retries.close(timeout=5)
        await self.leases.close()


def _ignore_result(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.debug("lease refresh failed: %r", task.exception())
