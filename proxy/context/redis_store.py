"""The production history store: Redis, shared by every replica.

Layout per task (the task id sits verbatim in a ``{...}`` hash tag so that all of a
task's keys share one cluster slot):

- ``<prefix>{<task>}:msgs``: list of JSON messages, oldest first;
- ``<prefix>{<task>}:meta``: hash, ``summary``;
- ``<prefix>{<task>}:req``: hash, request id -> marker ``{state, attempt_id, answer,
  stored, superseded}`` (``stored``: messages the last commit wrote under that request
  id; ``superseded``: the last attempts taken over);
- ``<prefix>{<task>}:live``: hash, attempt id -> in-flight lease ``<expiry ms>|<holder>``
  (Redis server time): the one record of which replies of the task are in flight;
- ``<prefix>{<task>}:pending``: list of 905 texts waiting for a reply in flight.

Every write restarts the TTL of all three keys. Read-modify-writes are Lua scripts,
so they are atomic across replicas.

Messages are encoded with a fixed key order: ``id`` and ``request_id`` first (the
scripts match them by plain string prefix, without decoding), ``content``,
``interrupted``, ``tokens`` and ``heard_at`` last (``update_message`` replaces that
tail in place, so messages written before ``heard_at`` existed are updated alike).
Lua never re-encodes a message: its cjson would round floats to 14 digits and turn
empty lists into objects.
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import orjson
import redis.asyncio as redis

from proxy.context.history import (
    DEFAULT_LEASE_SECONDS,
    PROBE_WINDOW,
    SUPERSEDED_KEPT,
    ClaimState,
    LeaseHeld,
    RequestClaim,
    SpokenOutcome,
    StoredAnswer,
    StoredMessage,
    TaskHistory,
)

# update_message rewrites these; they must stay the last keys of an encoded message.
MUTABLE_FIELDS = ("content", "interrupted", "tokens", "heard_at")

# Shared by every script. KEYS: messages, meta, requests (``task_keys``), then for some
# scripts the in-flight leases (``live_key``) and the pending 905s; ARGV[1]: TTL.
_LUA_HELPERS = (
    f"local SUPERSEDED_KEPT = {SUPERSEDED_KEPT}\n"
    + r"""
local ttl = tonumber(ARGV[1])

local function touch()
  for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ttl) end
end

-- Leases use the server's clock: one clock for every replica.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- A lease is '<expiry ms>|<holder>' under the attempt id in KEYS[4].
local function lease_live(attempt, now)
  local value = redis.call('HGET', KEYS[4], attempt)
  return value ~= false and (tonumber(string.match(value, '^%d+')) or 0) > now
end

-- Live leases other than ``except``'s; expired ones are dropped on the way.
local function others_live(except, now)
  local all, count = redis.call('HGETALL', KEYS[4]), 0
  for i = 1, #all, 2 do
    if (tonumber(string.match(all[i + 1], '^%d+')) or 0) <= now then
      redis.call('HDEL', KEYS[4], all[i])
    elseif all[i] ~= except then
      count = count + 1
    end
  end
  return count
end

local function set_lease(attempt, now, lease_ms, holder)
  redis.call('HSET', KEYS[4], attempt, tostring(now + lease_ms) .. '|' .. holder)
  redis.call('EXPIRE', KEYS[4], ttl)
end

local function superseded(marker, attempt)
  for _, id in ipairs(marker.superseded or {}) do
    if id == attempt then return true end
  end
  return false
end

local function supersede(marker, attempt)
  local list = {}
  for _, id in ipairs(marker.superseded or {}) do list[#list + 1] = id end
  list[#list + 1] = marker.attempt_id
  while #list > SUPERSEDED_KEPT do table.remove(list, 1) end
  marker.superseded = list
  redis.call('HDEL', KEYS[4], marker.attempt_id)
  marker.attempt_id = attempt
end

-- visit(index, value) for each message, newest first, in growing chunks: what is
-- looked for is almost always near the tail. Stops when visit returns true.
local function scan_from_tail(visit)
  local length = redis.call('LLEN', KEYS[1])
  local seen, chunk = 0, 16
  while seen < length do
    local stop = -seen - 1
    local start = math.max(-length, stop - chunk + 1)
    local values = redis.call('LRANGE', KEYS[1], start, stop)
    if #values == 0 then return end
    for i = #values, 1, -1 do
      if visit(start + i - 1, values[i]) then return end
    end
    seen, chunk = seen + #values, chunk * 2
  end
end

local function find_by_id(id_prefix)
  local found, found_value
  scan_from_tail(function(index, value)
    if string.sub(value, 1, #id_prefix) == id_prefix then
      found, found_value = index, value
      return true
    end
  end)
  return found, found_value
end
"""
)

# KEYS: messages, meta, requests, leases, pending 905s. ARGV: ttl, request id, new
# attempt id, lease ms, holder. Returns {state, previous attempt, marker, pending
# 905s, other live leases}.
_CLAIM_SCRIPT = r"""
local now, lease_ms = now_ms(), tonumber(ARGV[4])
local raw = redis.call('HGET', KEYS[3], ARGV[2])
local result
if not raw then
  local marker = {state = 'streaming', attempt_id = ARGV[3], stored = 0}
  redis.call('HSET', KEYS[3], ARGV[2], cjson.encode(marker))
  result = {'new', '', ''}
else
  local marker = cjson.decode(raw)
  if marker.state == 'done' then
    result = {'replay', '', raw}
  elseif marker.attempt_id == ARGV[3] then
    result = {'new', '', ''}  -- this very claim ran already (the call was retried)
  else
    local state = marker.state == 'streaming' and 'takeover' or 'retry'
    result = {state, marker.attempt_id, ''}
    supersede(marker, ARGV[3])
    marker.state = 'streaming'
    redis.call('HSET', KEYS[3], ARGV[2], cjson.encode(marker))
  end
end
if result[1] ~= 'replay' then set_lease(ARGV[3], now, lease_ms, ARGV[5]) end
touch()
result[4] = redis.call('LLEN', KEYS[5])
result[5] = others_live(ARGV[3], now)
return result
"""

# KEYS: leases, pending 905s. ARGV: attempt, lease ms, holder, create ('1' or '').
_HOLD_SCRIPT = r"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[4] ~= '' or redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  redis.call('HSET', KEYS[1], ARGV[1], tostring(now + tonumber(ARGV[2])) .. '|' .. ARGV[3])
  redis.call('EXPIRE', KEYS[1], 86400)
end
return redis.call('LLEN', KEYS[2])
"""

# KEYS: messages, meta, requests, leases, pending 905s. ARGV: ttl, newest message's id
# prefix or '', encoded message, pending item.
_ADD_SPOKEN_SCRIPT = r"""
if others_live('', now_ms()) > 0 then
  redis.call('RPUSH', KEYS[5], ARGV[4])
  redis.call('EXPIRE', KEYS[5], ttl)
  return 'pending'
end
local newest = redis.call('LINDEX', KEYS[1], -1)
if ARGV[2] == '' then
  if newest then return 'moved' end
elseif not newest or string.sub(newest, 1, #ARGV[2]) ~= ARGV[2] then
  return 'moved'
end
redis.call('RPUSH', KEYS[1], ARGV[3])
touch()
return 'appended'
"""

# ARGV: ttl, request id or '', attempt id, answer JSON or '', request id needle
# (',"request_id":<json>,'), seed count, probe (the id prefix of the turn's first
# message, or ''), adopt ('1' or ''), seed messages..., messages...
_COMMIT_SCRIPT = r"""
local request_id, needle, probe, adopt = ARGV[2], ARGV[5], ARGV[7], ARGV[8] ~= ''
local marker = nil
if ARGV[3] ~= '' then redis.call('HDEL', KEYS[4], ARGV[3]) end  -- the lease ends here
if request_id ~= '' then
  local raw = redis.call('HGET', KEYS[3], request_id)
  if raw then marker = cjson.decode(raw) end
  if marker and marker.attempt_id == ARGV[3] then
    -- This attempt's commit landed already (a retried call, or a retry after a timeout).
    if marker.state ~= 'streaming' then touch() return 1 end
  elseif not adopt then
    return 0
  elseif not marker then  -- the attempt's claim never ran: this commit makes it
    marker = {state = 'streaming', attempt_id = ARGV[3], stored = 0}
  elseif superseded(marker, ARGV[3]) or marker.state == 'done' then
    return 0  -- a later attempt took this one over, or the request finished
  elseif marker.state == 'interrupted' then  -- as the claim would have (RETRY)
    supersede(marker, ARGV[3])
  elseif lease_live(marker.attempt_id, now_ms()) then
    return 2  -- another attempt streams it, and its replica is alive: ask again later
  else  -- another attempt streamed it, and its replica died: adopted
    supersede(marker, ARGV[3])
  end
elseif probe ~= '' then  -- no marker: the turn's first message says if it landed
  local seen, found = 0, false
  scan_from_tail(function(index, value)
    seen = seen + 1
    found = string.sub(value, 1, #probe) == probe
    return found or seen >= PROBE_WINDOW
  end)
  if found then touch() return 1 end
end

-- The first ',"request_id":' is the top-level key: it directly follows the id string.
local function has_request_id(value)
  local at = string.find(value, ',"request_id":', 1, true)
  return at ~= nil and string.sub(value, at, at + #needle - 1) == needle
end

local earlier = marker and tonumber(marker.stored) or 0
if earlier > 0 then  -- drop what an earlier attempt of this request stored
  local left = earlier
  scan_from_tail(function(index, value)
    if has_request_id(value) then
      redis.call('LSET', KEYS[1], index, '__removed__')
      left = left - 1
    end
    return left == 0
  end)
  if left < earlier then redis.call('LREM', KEYS[1], left - earlier, '__removed__') end
end

local stored = 0
local function push(first, last)
  for from = first, last, 500 do
    local to = math.min(from + 499, last)
    redis.call('RPUSH', KEYS[1], unpack(ARGV, from, to))
    for i = from, to do
      if marker and has_request_id(ARGV[i]) then stored = stored + 1 end
    end
  end
end
local seed_count = tonumber(ARGV[6])
if seed_count > 0 and redis.call('LLEN', KEYS[1]) == 0 then push(9, 8 + seed_count) end
push(9 + seed_count, #ARGV)

if marker then
  local finished = ARGV[4] ~= ''
  marker.state = finished and 'done' or 'interrupted'
  marker.answer = finished and cjson.decode(ARGV[4]) or cjson.null
  marker.stored = stored
  redis.call('HSET', KEYS[3], request_id, cjson.encode(marker))
end
touch()
return 1
"""

# ARGV: ttl, id prefix, new tail ('"content":...,"tokens":null,"heard_at":...}').
# Only the tail is replaced, so the rest of the message keeps its exact bytes.
_UPDATE_MESSAGE_SCRIPT = r"""
-- Offset of the top-level "content" key: skip strings, track nesting depth.
local function content_offset(s)
  local depth, i = 0, 1
  while true do
    i = string.find(s, '[{}%[%]"]', i)
    if not i then return nil end
    local c = string.sub(s, i, i)
    if c == '"' then
      if depth == 1 and string.sub(s, i, i + 9) == '"content":' then return i end
      repeat  -- to the closing quote, stepping over escapes
        i = string.find(s, '["\\]', i + 1)
        local escaped = string.sub(s, i, i) == '\\'
        if escaped then i = i + 1 end
      until not escaped
    elseif c == '{' or c == '[' then
      depth = depth + 1
    else
      depth = depth - 1
    end
    i = i + 1
  end
end

local index, value = find_by_id(ARGV[2])
if not index then return 0 end
local at = content_offset(value)
if not at then return redis.error_reply('stored message without a content field') end
redis.call('LSET', KEYS[1], index, string.sub(value, 1, at - 1) .. ARGV[3])
touch()
return 1
"""

# ARGV: ttl, id prefix, summary.
_SET_SUMMARY_SCRIPT = r"""
local index = find_by_id(ARGV[2])
if not index then return 0 end
if index == -1 then
  redis.call('DEL', KEYS[1])
else
  redis.call('LTRIM', KEYS[1], index + 1, -1)
end
redis.call('HSET', KEYS[2], 'summary', ARGV[3])
touch()
return 1
"""


class RedisHistoryStore:
    """``HistoryStore`` on Redis (standalone or cluster), redis-py asyncio."""

    def __init__(
        self, client: redis.Redis, *, prefix: str = "proxy:", ttl_seconds: int = 86400
    ) -> None:
        self._client = client
        self.prefix = prefix
        self.ttl_seconds = ttl_seconds
        self._claim = client.register_script(_LUA_HELPERS + _CLAIM_SCRIPT)
        self._commit = client.register_script(
            _LUA_HELPERS + f"local PROBE_WINDOW = {PROBE_WINDOW}\n" + _COMMIT_SCRIPT
        )
        self._hold = client.register_script(_HOLD_SCRIPT)
        self._add_spoken = client.register_script(_LUA_HELPERS + _ADD_SPOKEN_SCRIPT)
        self._update = client.register_script(_LUA_HELPERS + _UPDATE_MESSAGE_SCRIPT)
        self._set_summary = client.register_script(_LUA_HELPERS + _SET_SUMMARY_SCRIPT)

    def task_keys(self, task_id: str) -> list[str]:
        """The task's keys: messages, meta, request markers (the scripts' KEYS order)."""
        base = f"{self.prefix}{{{task_id}}}"
        return [f"{base}:msgs", f"{base}:meta", f"{base}:req"]

    async def load(self, task_id: str, limit: int) -> TaskHistory:
        messages_key, meta_key, _ = self.task_keys(task_id)
        # One round trip; only the tail is read, whatever the length of the list.
        async with self._client.pipeline(transaction=True) as pipe:
            if limit > 0:
                pipe.lrange(messages_key, -limit, -1)
            pipe.hget(meta_key, "summary")
            pipe.llen(messages_key)
            results = await pipe.execute()
        encoded = results[0] if limit > 0 else []
        summary, total = results[-2], results[-1]
        return TaskHistory(
            messages=[StoredMessage.from_dict(orjson.loads(value)) for value in encoded],
            summary=_text(summary) if summary is not None else None,
            total_messages=int(total),
        )

    def live_key(self, task_id: str) -> str:
        """The task's in-flight leases: attempt id -> '<expiry ms>|<holder>'."""
        return f"{self.prefix}{{{task_id}}}:live"

    def _lease_keys(self, task_id: str) -> list[str]:
        return [*self.task_keys(task_id), self.live_key(task_id), self.pending_key(task_id)]

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
        state, previous, marker, pending, others = await self._claim(
            keys=self._lease_keys(task_id), args=args
        )
        claim_state = ClaimState(_text(state))
        claim = RequestClaim(
            claim_state, attempt_id, pending_spoken=int(pending), others_in_flight=int(others)
        )
        if claim_state is ClaimState.REPLAY:
            claim.answer = _decode_answer(orjson.loads(marker).get("answer"))
        elif claim_state is ClaimState.TAKEOVER:
            claim.previous_attempt_id = _text(previous)
        return claim

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
        await self._client.hdel(self.live_key(task_id), attempt_id)

    async def add_spoken(
        self, task_id: str, message: StoredMessage, item: dict[str, Any], *, after: str | None
    ) -> SpokenOutcome:
        args: list[bytes | str | int] = [
            self.ttl_seconds,
            _id_prefix(after) if after is not None else b"",
            _encode(message),
            orjson.dumps(item),
        ]
        outcome = await self._add_spoken(keys=self._lease_keys(task_id), args=args)
        return SpokenOutcome(_text(outcome))

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
            _id_prefix(messages[0].id) if probe else b"",
            b"1" if adopt and attempt_id else b"",
            *(_encode(message) for message in seed),
            *(_encode(message) for message in messages),
        ]
        committed = await self._commit(keys=self._lease_keys(task_id), args=args)
        if committed == 2:
            raise LeaseHeld(f"another attempt of request {request_id} holds a live lease")
        return bool(committed)

    async def append(self, task_id: str, messages: list[StoredMessage]) -> None:
        keys = self.task_keys(task_id)
        async with self._client.pipeline(transaction=True) as pipe:
            if messages:
                pipe.rpush(keys[0], *(_encode(message) for message in messages))
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
        args: list[bytes | str | int] = [self.ttl_seconds, _id_prefix(message_id), tail]
        return bool(await self._update(keys=self.task_keys(task_id), args=args))

    async def set_summary(self, task_id: str, summary: str, upto_message_id: str) -> bool:
        args: list[bytes | str | int] = [self.ttl_seconds, _id_prefix(upto_message_id), summary]
        return bool(await self._set_summary(keys=self.task_keys(task_id), args=args))

    def pending_key(self, task_id: str) -> str:
        return f"{self.prefix}{{{task_id}}}:pending"

    async def push_pending(self, task_id: str, item: dict[str, Any]) -> None:
        key = self.pending_key(task_id)
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.rpush(key, orjson.dumps(item))
            pipe.expire(key, self.ttl_seconds)
            await pipe.execute()

    async def take_pending(self, task_id: str) -> list[dict[str, Any]]:
        key = self.pending_key(task_id)
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.lrange(key, 0, -1)
            pipe.delete(key)
            items, _ = await pipe.execute()
        return [orjson.loads(item) for item in items]

    async def hit(self, key: str, window_seconds: int) -> int:
        counter = f"{self.prefix}count:{key}"
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.incr(counter)
            pipe.expire(counter, window_seconds, nx=True)
            count, _ = await pipe.execute()
        return int(count)

    async def mark_once(self, key: str, ttl_seconds: int) -> bool:
        return bool(
            await self._client.set(f"{self.prefix}once:{key}", b"1", nx=True, ex=ttl_seconds)
        )

    async def reset(self, task_id: str) -> None:
        await self._client.delete(*self._lease_keys(task_id))

    async def expire(self, task_id: str, ttl_seconds: int) -> None:
        async with self._client.pipeline(transaction=True) as pipe:
            self._queue_expire(pipe, self.task_keys(task_id), ttl_seconds)
            await pipe.execute()

    async def ping(self) -> None:
        if not await self._client.ping():
            raise ConnectionError("redis did not answer PING")

    async def close(self) -> None:
        await self._client.aclose()

    @staticmethod
    def _queue_expire(pipe: Any, keys: list[str], ttl_seconds: int) -> None:
        for key in keys:
            pipe.expire(key, ttl_seconds)


def _encode(message: StoredMessage) -> bytes:
    fields = message.to_dict()
    head = {"id": fields.pop("id"), "request_id": fields.pop("request_id")}
    tail = {name: fields.pop(name) for name in MUTABLE_FIELDS}
    return orjson.dumps({**head, **fields, **tail})


def _id_prefix(message_id: str) -> bytes:
    """How every encoded message with this id starts (see ``_encode``)."""
    return b'{"id":' + orjson.dumps(message_id) + b","


def _decode_answer(data: dict[str, Any] | None) -> StoredAnswer | None:
    if not data:
        return None
    return StoredAnswer(
        content=data.get("content") or "",
        model=data.get("model"),
        finish_reason=data.get("finish_reason"),
        completion_id=data.get("completion_id"),
    )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
