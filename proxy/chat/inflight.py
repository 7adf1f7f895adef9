"""The in-flight leases this replica holds: one per reply it is streaming or committing.

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

from proxy.context.guard import StoreGuard
from proxy.context.history import HistoryStore

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


def _ignore_result(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.debug("lease refresh failed: %r", task.exception())
