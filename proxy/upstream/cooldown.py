"""Cooldown of failed upstream targets: skip a target known to be down, probe it once.

A target that failed (connect error, timeout, 5xx, 429) is skipped for the route's
``cooldown_seconds``; then one request (the probe) is let through. Its success brings
the target back; its failure starts another cooldown. Meanwhile every other request
goes to the next target at once instead of waiting out a timeout again.

Reads on the request path are local (a dict lookup). With Redis, a failure is also
written there (a key per target with the cooldown as its TTL) and every process reads
those keys in the background every ``SYNC_SECONDS``, so the replicas share what they
learn; the probe is claimed with ``SET NX`` so that one replica probes, not each.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import time
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import redis.asyncio as redis
    from redis.asyncio.cluster import RedisCluster

log = logging.getLogger(__name__)

SYNC_SECONDS = 0.5
MAX_TARGETS = 1024  # targets come from configuration; a bound all the same


class Admission(Enum):
    USE = "use"  # healthy (as far as this process knows)
    PROBE = "probe"  # cooled down: this request tries it once
    SKIP = "skip"  # cooling down, or another request is probing it


@dataclass(slots=True)
class _Down:
    until: float  # time.time(): shared with other processes through Redis
    probe_until: float = 0.0  # a probe is under way until then
    since: float = 0.0  # when this process learnt it (its write may not have landed yet)


@functools.lru_cache(maxsize=MAX_TARGETS)  # every request asks; targets are few
def target_key(base_url: str, model: str | None) -> str:
    """A short, stable name for a target (no key material: URL and model only)."""
    return hashlib.sha1(f"{base_url}|{model or ''}".encode(), usedforsecurity=False).hexdigest()[
        :16
    ]


class CooldownBook:
    def __init__(self) -> None:
        self._down: dict[str, _Down] = {}
        self._known: set[str] = set()  # targets this process uses (synced from Redis)
        self._redis: redis.Redis | RedisCluster | None = None
        self._prefix = ""
        self._sync: asyncio.Task[None] | None = None
        self._writes: set[asyncio.Task[object]] = set()

    # Sharing across replicas.

    def share_through(self, client: redis.Redis | RedisCluster, prefix: str) -> None:
        """Share cooldowns through Redis; call from a running event loop."""
        # One hash tag: MGET and DEL span several keys, which a cluster keeps in one slot.
        self._redis, self._prefix = client, f"{prefix}{{upstream}}:"
        self._sync = asyncio.ensure_future(self._sync_forever())

    async def close(self) -> None:
        if self._sync is not None:
            self._sync.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sync
            self._sync = None
        for task in list(self._writes):
            task.cancel()

    async def _sync_forever(self) -> None:
        while True:
            await asyncio.sleep(SYNC_SECONDS)
            try:
                await self.sync()
            except Exception as exc:  # Redis down: each process keeps its own view
                log.debug("cooldown sync failed: %r", exc)

    async def sync(self) -> None:
        """Adopt the cooldowns other replicas wrote (and drop those they cleared)."""
        if self._redis is None or not self._known:
            return
        keys = sorted(self._known)
        values = await self._redis.mget([f"{self._prefix}down:{k}" for k in keys])
        now = time.time()
        for key, value in zip(keys, values, strict=True):
            until = _as_float(value)
            local = self._down.get(key)
            if until is not None and until > now:
                if local is None or local.until < until:
                    self._down[key] = _Down(until, local.probe_until if local else 0.0, now)
            elif local is not None and local.until > now and now - local.since > SYNC_SECONDS:
                self._down.pop(key, None)  # another replica's probe brought it back

    async def _learn(self, key: str) -> None:
        if self._redis is None:
            return
        try:
            until = _as_float(await self._redis.get(f"{self._prefix}down:{key}"))
        except Exception:
            return
        if until is not None and until > time.time():
            self._down[key] = _Down(until, since=time.time())

    # The request path.

    async def admit(self, key: str, probe_seconds: float) -> Admission:
        if key not in self._known and len(self._known) < MAX_TARGETS:
            self._known.add(key)
            await self._learn(key)  # once per target and process: what the others know
        down = self._down.get(key)
        if down is None:
            return Admission.USE
        now = time.time()
        if now < down.until or now < down.probe_until:
            return Admission.SKIP
        down.probe_until = now + probe_seconds
        if self._redis is not None:
            try:
                won = await self._redis.set(
                    f"{self._prefix}probe:{key}", b"1", nx=True, px=int(probe_seconds * 1000)
                )
            except Exception:
                won = True  # Redis down: this process decides alone
            if not won:
                return Admission.SKIP
        return Admission.PROBE

    def failed(self, key: str, cooldown_seconds: float) -> None:
        if cooldown_seconds <= 0:
            return
        until = time.time() + cooldown_seconds
        self._down[key] = _Down(until, since=time.time())
        if self._redis is not None:
            self._write(
                self._redis.set(
                    f"{self._prefix}down:{key}", repr(until), px=int(cooldown_seconds * 1000)
                )
            )

    def succeeded(self, key: str) -> None:
        if self._down.pop(key, None) is not None and self._redis is not None:
            self._write(
                self._redis.delete(f"{self._prefix}down:{key}", f"{self._prefix}probe:{key}")
            )

    def is_down(self, key: str) -> bool:
        down = self._down.get(key)
        return down is not None and time.time() < down.until

    def _write(self, call: object) -> None:
        """Fire and forget: a request never waits for Redis to hear about a target."""

        async def run() -> object:
            try:
                return await call  # type: ignore[misc]
            except Exception as exc:
                log.debug("cooldown write failed: %r", exc)
                return None

        task = asyncio.ensure_future(run())
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)


def _as_float(value: object) -> float | None:
    if isinstance(value, bytes | str):
        try:
            return float(value)
        except ValueError:
            return None
    return None
