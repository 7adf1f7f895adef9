"""The production history store: Redis, shared by every replica.

Layout per task (the task id sits in a ``{...}`` hash tag so that all of a task's keys
share one cluster slot; verbatim, except that ``%``, ``{`` and ``}`` are escaped as
``%25``, ``%7B`` and ``%7D``, so that any id makes one non-empty tag):

- ``<prefix>{<task>}:msgs``: list of JSON messages, oldest first;
- ``<prefix>{<task>}:meta``: hash, ``summary``;
- ``<prefix>{<task>}:req``: hash, request id -> marker ``{state, attempt_id, answer,
  stored, superseded}`` (``stored``: messages the last commit wrote under that request
  id; ``superseded``: the last attempts taken over);
- ``<prefix>{<task>}:live``: hash, attempt id -> in-flight lease ``<expiry ms>|<holder>``
  (Redis server time): the one record of which replies of the task are in flight;
- ``<prefix>{<task>}:pending``: list of 905 texts waiting for a reply in flight;
- ``<prefix>{<task>}:metainfo``: list of meta.info objects queued for the task's next
  reply (``POST /admin/tasks/{id}/metainfo``);
- ``<prefix>{<task>}:erased``: the erasure tombstone, the time of the task's last
  erasure (ms, wall clock), kept ``ERASURE_TOMBSTONE_SECONDS``: writers whose attempt
  began before it are refused, in the same script as the write;
- ``<prefix>{<task>}:reset``: the time of the task's last reset (ms, wall clock): an
  attempt begun before it whose request marker is gone cannot write into the fresh
  task (where the marker is gone for another reason, a failover, the commit makes it).

Every write restarts the TTL of all three keys. Read-modify-writes are Lua scripts,
so they are atomic across replicas.

Messages are encoded by ``redis_codec`` (a fixed key order the scripts rely on).
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
import uuid
from typing import Any

import orjson
import redis.asyncio as redis
from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import ResponseError

from proxy.context.history import (
    DEFAULT_LEASE_SECONDS,
    ERASURE_TOMBSTONE_SECONDS,
    PROBE_WINDOW,
    LeaseHeld,
    RequestClaim,
    SpokenOutcome,
    StoredAnswer,
    StoredMessage,
    TaskErased,
    TaskHistory,
    TurnStart,
)
from proxy.context.redis_codec import (
    MUTABLE_FIELDS,
    decode_claim,
    decode_history,
    encode_message,
    id_prefix,
    text,
    time_ms,
)
from proxy.context.redis_lane import LaneScript, PyScript, Reply, ScriptLane, StoreScript
from proxy.context.redis_lua import (
    ADD_SPOKEN_SCRIPT,
    BEGIN_TURN_SCRIPT,
    CLAIM_SCRIPT,
    COMMIT_SCRIPT,
    ERASE_SCRIPT,
    HOLD_SCRIPT,
    LUA_HELPERS,
    PUSH_SCRIPT,
    RESET_SCRIPT,
    SET_SUMMARY_SCRIPT,
    UPDATE_MESSAGE_SCRIPT,
)
from proxy.context.task_lookup import MAX_MATCHES, names_task

RedisClient = redis.Redis | RedisCluster


# The per-turn reads and queues are scripts too, not MULTI/EXEC pipelines: atomic alike,
# and on a cluster redis-py's transactions cost several times a script (store bench:
# tests/bench/store_cluster.py).

# KEYS: messages, meta; ARGV: how many of the newest messages. {messages, summary, total}.
_LOAD_SCRIPT = r"""
local limit = tonumber(ARGV[1])
local messages = {}
if limit > 0 then messages = redis.call('LRANGE', KEYS[1], -limit, -1) end
return {messages, redis.call('HGET', KEYS[2], 'summary'), redis.call('LLEN', KEYS[1])}
"""

# KEYS: a queue. Returns its items and deletes it.
_TAKE_SCRIPT = r"""
local items = redis.call('LRANGE', KEYS[1], 0, -1)
redis.call('DEL', KEYS[1])
return items
"""

# KEYS: a counter; ARGV: its window in seconds (set by the first hit only).
_HIT_SCRIPT = r"""
local count = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[1], 'NX')
return count
"""

# Readiness: a write and a read under the prefix, by a script (the turns use scripts).
_PROBE_SCRIPT = r"""
redis.call('SET', KEYS[1], ARGV[1], 'PX', 60000)
return redis.call('GET', KEYS[1])
"""


class RedisHistoryStore:
    """``HistoryStore`` on Redis (standalone or cluster), redis-py asyncio; the scripts
    on a lane of their own where the client allows one (``redis_lane``)."""

    def __init__(
        self,
        client: RedisClient,
        *,
        prefix: str = "proxy:",
        ttl_seconds: int = 86400,
        lane: ScriptLane | None = None,
    ) -> None:
        """``lane``: the scripts' own connection (``redis_lane.script_lane``), or None
        to call them through redis-py."""
        self._client = client
        self.prefix = prefix
        self.ttl_seconds = ttl_seconds
        self._lane = lane
        self._scripts: list[AsyncScript] = []
        self._claim = self._script(LUA_HELPERS + CLAIM_SCRIPT)
        self._begin = self._script(LUA_HELPERS + BEGIN_TURN_SCRIPT)
        self._commit = self._script(
            LUA_HELPERS + f"local PROBE_WINDOW = {PROBE_WINDOW}\n" + COMMIT_SCRIPT
        )
        self._hold = self._script(HOLD_SCRIPT)
        self._add_spoken = self._script(LUA_HELPERS + ADD_SPOKEN_SCRIPT)
        self._update = self._script(LUA_HELPERS + UPDATE_MESSAGE_SCRIPT)
        self._set_summary = self._script(LUA_HELPERS + SET_SUMMARY_SCRIPT)
        self._probe = self._script(_PROBE_SCRIPT)
        self._load = self._script(_LOAD_SCRIPT)
        self._take = self._script(_TAKE_SCRIPT)
        self._hit = self._script(_HIT_SCRIPT)
        self._push = self._script(LUA_HELPERS + PUSH_SCRIPT)
        self._erase = self._script(ERASE_SCRIPT)
        self._reset = self._script(RESET_SCRIPT)

    def _script(self, source: str) -> StoreScript:
        script = self._client.register_script(source)
        self._scripts.append(script)
        return PyScript(script) if self._lane is None else LaneScript(script, self._lane)

    async def load_scripts(self) -> None:
        """Load the scripts on every primary ahead of the turns (start, readiness).

        A script the server lacks makes redis-py retry it after a NOSCRIPT error; on
        a cluster, many such retries at once on new connections sometimes fail inside
        redis-py (8.1), so the turns should find the scripts already there."""
        for script in self._scripts:
            await self._client.script_load(script.script)

    def _base(self, task_id: str) -> str:
        """What every key of the task starts with: the prefix and the task's hash tag."""
        return f"{self.prefix}{{{_escape(task_id)}}}"

    def task_keys(self, task_id: str) -> list[str]:
        """The task's keys: messages, meta, request markers (the scripts' KEYS order)."""
        base = self._base(task_id)
        return [f"{base}:msgs", f"{base}:meta", f"{base}:req"]

    async def load(self, task_id: str, limit: int) -> TaskHistory:
        messages_key, meta_key, _ = self.task_keys(task_id)
        # One round trip; only the tail is read, whatever the length of the list.
        encoded, summary, total = await self._load(
            keys=[messages_key, meta_key], args=[max(limit, 0)]
        )
        return decode_history(encoded, summary, total)

    def live_key(self, task_id: str) -> str:
        """The task's in-flight leases: attempt id -> '<expiry ms>|<holder>'."""
        return f"{self._base(task_id)}:live"

    def erased_key(self, task_id: str) -> str:
        """The task's erasure tombstone: when it was last erased (ms)."""
        return f"{self._base(task_id)}:erased"

    def reset_key(self, task_id: str) -> str:
        """The time of the task's last reset (ms)."""
        return f"{self._base(task_id)}:reset"

    def _lease_keys(self, task_id: str) -> list[str]:
        return [*self.task_keys(task_id), self.live_key(task_id), self.pending_key(task_id)]

    def _writer_keys(self, task_id: str) -> list[str]:
        """``_lease_keys`` and the erasure tombstone (the order the writing scripts use)."""
        return [*self._lease_keys(task_id), self.erased_key(task_id)]

    def _all_keys(self, task_id: str) -> list[str]:
        """Every key of the task but its tombstone (what a reset deletes)."""
        return [*self._lease_keys(task_id), self.meta_queue_key(task_id)]

    async def claim_request(
        self,
        task_id: str,
        request_id: str,
        attempt_id: str | None = None,
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        holder: str = "",
    ) -> RequestClaim:
        attempt_id = attempt_id or uuid.uuid4().hex
        args: list[bytes | str | int] = [
            self.ttl_seconds,
            request_id,
            attempt_id,
            int(lease_seconds * 1000),
            holder,
        ]
        claimed = await self._claim(keys=self._lease_keys(task_id), args=args)
        return decode_claim(attempt_id, claimed)

    def begin_turn(
        self,
        task_id: str,
        request_id: str | None,
        attempt_id: str,
        *,
        limit: int,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        holder: str = "",
        take_meta: bool = False,
    ) -> asyncio.Future[TurnStart]:
        """Started now: through the lane, the script is on the wire when this returns."""
        args: list[bytes | str | int] = [
            self.ttl_seconds,
            request_id or "",
            attempt_id,
            int(lease_seconds * 1000),
            holder,
            max(limit, 0),
            b"1" if take_meta else b"",
        ]
        keys = [*self._lease_keys(task_id), self.meta_queue_key(task_id)]

        def decode(reply: Reply) -> TurnStart:
            claimed, encoded, summary, total, meta = reply
            return TurnStart(
                decode_claim(attempt_id, claimed) if claimed else None,
                decode_history(encoded, summary, total),
                [orjson.loads(item) for item in meta],
            )

        return self._begin.start(keys, args, decode)

    async def hold(
        self, task_id: str, attempt_id: str, lease_seconds: float, *, holder: str, create: bool
    ) -> int:
        args: list[bytes | str | int] = [
            attempt_id,
            int(lease_seconds * 1000),
            holder,
            b"1" if create else b"",
        ]
        keys = [self.live_key(task_id), self.pending_key(task_id)]
        return int(await self._hold(keys=keys, args=args))

    async def release(self, task_id: str, attempt_id: str) -> None:
        if self._lane is not None:
            await self._lane.execute("HDEL", self.live_key(task_id), attempt_id)
        else:
            await self._client.hdel(self.live_key(task_id), attempt_id)

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
        args: list[bytes | str | int] = [
            self.ttl_seconds,
            id_prefix(after) if after is not None else b"",
            encode_message(message),
            orjson.dumps(item),
            time_ms(started_at),
            settling or "",
        ]
        outcome = await self._add_spoken(keys=self._writer_keys(task_id), args=args)
        return SpokenOutcome(text(outcome))

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
        seed = seed or []
        # Without a request marker the turn's first message id tells whether an earlier
        # try landed; with one, the marker does, and only a retry needs to ask.
        probe = (retry or request_id is None) and bool(messages)
        args: list[bytes | str | int] = [
            self.ttl_seconds,
            request_id or "",
            attempt_id or "",
            orjson.dumps(dataclasses.asdict(answer)) if answer is not None else b"",
            b',"request_id":' + orjson.dumps(request_id) + b",",
            len(seed),
            id_prefix(messages[0].id) if probe else b"",
            b"1" if adopt and attempt_id else b"",
            time_ms(started_at),
            *(encode_message(message) for message in seed),
            *(encode_message(message) for message in messages),
        ]
        keys = [*self._writer_keys(task_id), self.reset_key(task_id)]
        committed = await self._commit(keys=keys, args=args)
        if committed == 2:
            raise LeaseHeld(f"another attempt of request {request_id} holds a live lease")
        if committed == 3:
            raise TaskErased(f"task erased after this turn began: {task_id}")
        return bool(committed)

    async def append(self, task_id: str, messages: list[StoredMessage]) -> None:
        keys = self.task_keys(task_id)
        async with self._client.pipeline(transaction=True) as pipe:
            if messages:
                pipe.rpush(keys[0], *(encode_message(message) for message in messages))
            self._queue_expire(pipe, keys, self.ttl_seconds)
            await pipe.execute()

    async def update_message(
        self,
        task_id: str,
        message_id: str,
        *,
        content: Any,
        interrupted: bool,
        heard_at: float | None = None,
    ) -> bool:
        replacement = dict.fromkeys(MUTABLE_FIELDS)  # tokens: None, recounted
        replacement.update(content=content, interrupted=interrupted, heard_at=heard_at)
        tail = orjson.dumps(replacement)[1:]  # '"content":...,"heard_at":...}'
        args: list[bytes | str | int] = [self.ttl_seconds, id_prefix(message_id), tail]
        return bool(await self._update(keys=self.task_keys(task_id), args=args))

    async def set_summary(self, task_id: str, summary: str, upto_message_id: str) -> bool:
        args: list[bytes | str | int] = [self.ttl_seconds, id_prefix(upto_message_id), summary]
        return bool(await self._set_summary(keys=self.task_keys(task_id), args=args))

    def pending_key(self, task_id: str) -> str:
        return f"{self._base(task_id)}:pending"

    def meta_queue_key(self, task_id: str) -> str:
        return f"{self._base(task_id)}:metainfo"

    async def push_pending(
        self, task_id: str, item: dict[str, Any], *, started_at: float | None = None
    ) -> bool:
        keys = [self.pending_key(task_id), self.erased_key(task_id)]
        args: list[bytes | str | int] = [self.ttl_seconds, orjson.dumps(item), time_ms(started_at)]
        return bool(await self._push(keys=keys, args=args))

    async def take_pending(self, task_id: str) -> list[dict[str, Any]]:
        items = await self._take(keys=[self.pending_key(task_id)])
        return [orjson.loads(item) for item in items]

    async def push_meta(self, task_id: str, metainfo: dict[str, Any]) -> None:
        keys = [self.meta_queue_key(task_id), self.erased_key(task_id)]
        args: list[bytes | str | int] = [self.ttl_seconds, orjson.dumps(metainfo), b""]
        await self._push(keys=keys, args=args)

    async def take_meta(self, task_id: str) -> list[dict[str, Any]]:
        items = await self._take(keys=[self.meta_queue_key(task_id)])
        return [orjson.loads(item) for item in items]

    async def hit(self, key: str, window_seconds: int) -> int:
        counter = f"{self.prefix}count:{key}"
        return int(await self._hit(keys=[counter], args=[window_seconds]))

    async def mark_once(self, key: str, ttl_seconds: int) -> bool:
        return bool(
            await self._client.set(f"{self.prefix}once:{key}", b"1", nx=True, ex=ttl_seconds)
        )

    async def reset(self, task_id: str) -> None:
        args: list[bytes | str | int] = [time_ms(time.time()), self.ttl_seconds]
        await self._reset(keys=[*self._all_keys(task_id), self.reset_key(task_id)], args=args)

    async def erase(self, task_id: str, at: float) -> None:
        args: list[bytes | str | int] = [time_ms(at), ERASURE_TOMBSTONE_SECONDS]
        keys = [*self._all_keys(task_id), self.erased_key(task_id)]
        await self._erase(keys=keys, args=args)

    async def expire(self, task_id: str, ttl_seconds: int) -> None:
        async with self._client.pipeline(transaction=True) as pipe:
            self._queue_expire(pipe, self.task_keys(task_id), ttl_seconds)
            await pipe.execute()

    async def find_task_keys(self, task_id: str) -> list[str]:
        # Every task has a request or messages key; SCAN visits every primary of a cluster.
        pattern = f"{_glob(self.prefix)}{{*{_glob(_escape(task_id))}}}:*"
        found: set[str] = set()
        async for raw in self._client.scan_iter(match=pattern, count=1000):
            key = text(raw)
            tag, _, suffix = key[len(self.prefix) + 1 :].rpartition("}:")
            if suffix in ("msgs", "meta", "req") and names_task(_unescape(tag), task_id):
                found.add(_unescape(tag))
                if len(found) >= MAX_MATCHES:
                    break
        return sorted(found)

    async def ping(self) -> None:
        """Readiness: a real write and read under the prefix (a script, as the turns use),
        and a standalone client must not be talking to a cluster node."""
        token = uuid.uuid4().hex
        key = f"{self.prefix}{{ready}}:probe"
        await self.load_scripts()  # a restarted or promoted node starts without them
        if text(await self._probe(keys=[key], args=[token]) or b"") != token:
            raise ConnectionError("redis did not read back what the readiness probe wrote")
        if not isinstance(self._client, RedisCluster):
            try:
                info = await self._client.info("cluster")
            except ResponseError:
                return  # INFO not granted: the proxy does not need it
            if info.get("cluster_enabled"):
                raise ResponseError(
                    "MOVED: this Redis is a cluster node and the client is standalone"
                )

    async def close(self) -> None:
        if self._lane is not None:
            self._lane.close()
        await self._client.aclose()

    @staticmethod
    def _queue_expire(pipe: Any, keys: list[str], ttl_seconds: int) -> None:
        for key in keys:
            pipe.expire(key, ttl_seconds)


_ESCAPES = {"%": "%25", "{": "%7B", "}": "%7D"}
_UNESCAPE = re.compile("%(25|7B|7D)")


def _escape(task_id: str) -> str:
    """The task id inside its hash tag: no brace can end the tag early (or leave it
    empty, which would scatter the task's keys over the cluster's slots)."""
    if "%" not in task_id and "{" not in task_id and "}" not in task_id:
        return task_id  # the usual case: the id verbatim
    return "".join(_ESCAPES.get(c, c) for c in task_id)


def _unescape(tag: str) -> str:
    return _UNESCAPE.sub(lambda m: {"25": "%", "7B": "{", "7D": "}"}[m.group(1)], tag)


def _glob(value: str) -> str:
    """``value`` matched literally in a SCAN pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in value)
