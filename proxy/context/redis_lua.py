"""The Lua scripts of ``redis_store.RedisHistoryStore``: every read-modify-write of a
task's keys, atomic across replicas (see that module for the key layout)."""

from proxy.context.history import SUPERSEDED_KEPT

# Shared by every script. KEYS: messages, meta, requests (``task_keys``), then for some
# scripts the in-flight leases (``live_key``) and the pending 905s; ARGV[1]: TTL.
LUA_HELPERS = (
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

-- The task was erased at or after ``started`` (ms, '' = unknown: not checked): the
-- tombstone (``erase``) holds the erasure time, in ms.
local function erased_since(key, started)
  if started == '' then return false end
  local at = redis.call('GET', key)
  return at ~= false and tonumber(started) <= tonumber(at)
end

-- A reset (``reset``) at or after ``started``: ``erased_since`` on the reset key.
local reset_since = erased_since

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

# A request claim, shared by the claim and the turn start. KEYS: messages, meta,
# requests, leases, pending 905s. Returns {state, previous attempt, marker, pending
# 905s, other live leases}.
CLAIM_FUNCTION = r"""
local function claim(request_id, attempt, lease_ms, holder)
  local now = now_ms()
  local raw = redis.call('HGET', KEYS[3], request_id)
  local result
  if not raw then
    local marker = {state = 'streaming', attempt_id = attempt, stored = 0}
    redis.call('HSET', KEYS[3], request_id, cjson.encode(marker))
    result = {'new', '', ''}
  else
    local marker = cjson.decode(raw)
    if marker.state == 'done' then
      result = {'replay', '', raw}
    elseif marker.attempt_id == attempt then
      result = {'new', '', ''}  -- this very claim ran already (the call was retried)
    else
      local state = marker.state == 'streaming' and 'takeover' or 'retry'
      result = {state, marker.attempt_id, ''}
      supersede(marker, attempt)
      marker.state = 'streaming'
      redis.call('HSET', KEYS[3], request_id, cjson.encode(marker))
    end
  end
  if result[1] ~= 'replay' then set_lease(attempt, now, lease_ms, holder) end
  touch()
  result[4] = redis.call('LLEN', KEYS[5])
  result[5] = others_live(attempt, now)
  return result
end
"""

# KEYS: messages, meta, requests, leases, pending 905s. ARGV: ttl, request id, new
# attempt id, lease ms, holder.
CLAIM_SCRIPT = CLAIM_FUNCTION + "return claim(ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5])\n"

# A turn's start in one round trip: the claim (if the turn has a request id), the
# newest messages and summary, and the queued meta.info (taken, if the caller gets it).
# KEYS: messages, meta, requests, leases, pending 905s, queued meta.info. ARGV: ttl,
# request id or '', attempt id, lease ms, holder, how many messages, take meta ('1' or
# ''). Returns {claim or false, messages, summary, total messages, meta.info items}.
BEGIN_TURN_SCRIPT = (
    CLAIM_FUNCTION
    + r"""
local claimed = false
if ARGV[2] ~= '' then claimed = claim(ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]) end
local limit, messages, meta = tonumber(ARGV[6]), {}, {}
if limit > 0 then messages = redis.call('LRANGE', KEYS[1], -limit, -1) end
if ARGV[7] ~= '' then
  meta = redis.call('LRANGE', KEYS[6], 0, -1)
  if #meta > 0 then redis.call('DEL', KEYS[6]) end
end
local summary = redis.call('HGET', KEYS[2], 'summary')
return {claimed, messages, summary, redis.call('LLEN', KEYS[1]), meta}
"""
)

# KEYS: leases, pending 905s. ARGV: attempt, lease ms, holder, create ('1' or '').
HOLD_SCRIPT = r"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[4] ~= '' or redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  redis.call('HSET', KEYS[1], ARGV[1], tostring(now + tonumber(ARGV[2])) .. '|' .. ARGV[3])
  redis.call('EXPIRE', KEYS[1], 86400)
end
return redis.call('LLEN', KEYS[2])
"""

# KEYS: messages, meta, requests, leases, pending 905s, erasure tombstone. ARGV: ttl,
# newest message's id prefix or '', encoded message, pending item, started ms or '',
# the settling turn's attempt id or '' (its own lease is no reply in flight).
ADD_SPOKEN_SCRIPT = r"""
if erased_since(KEYS[6], ARGV[5]) then return 'erased' end
if others_live(ARGV[6], now_ms()) > 0 then
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

# KEYS: messages, meta, requests, leases, pending 905s, erasure tombstone.
# ARGV: ttl, request id or '', attempt id, answer JSON or '', request id needle
# (',"request_id":<json>,'), seed count, probe (the id prefix of the turn's first
# message, or ''), adopt ('1' or ''), started ms or '', seed messages..., messages...
# Returns 1 (recorded), 0 (refused: another attempt owns the request), 2 (another
# attempt's lease is live: ask again later), 3 (the task was erased after the turn
# began: nothing written).
COMMIT_SCRIPT = r"""
if erased_since(KEYS[6], ARGV[9]) then return 3 end
local request_id, needle, probe, adopt = ARGV[2], ARGV[5], ARGV[7], ARGV[8] ~= ''
local marker = nil
if ARGV[3] ~= '' then redis.call('HDEL', KEYS[4], ARGV[3]) end  -- the lease ends here
if request_id ~= '' then
  local raw = redis.call('HGET', KEYS[3], request_id)
  if raw then marker = cjson.decode(raw) end
  if marker and marker.attempt_id == ARGV[3] then
    -- This attempt's commit landed already (a retried call, or a retry after a timeout).
    if marker.state ~= 'streaming' then touch() return 1 end
  elseif not marker then
    -- No attempt of the request is known: its claim never ran (``adopt``), or the
    -- store lost it (a failover promoted a replica the claim had not reached yet).
    -- Nothing else owns the request: this commit makes it, unless the task was reset
    -- since the attempt began (it must not write into the fresh task).
    if reset_since(KEYS[7], ARGV[9]) then return 0 end
    marker = {state = 'streaming', attempt_id = ARGV[3], stored = 0}
  elseif not adopt then
    return 0
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
if seed_count > 0 and redis.call('LLEN', KEYS[1]) == 0 then push(10, 9 + seed_count) end
push(10 + seed_count, #ARGV)

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
UPDATE_MESSAGE_SCRIPT = r"""
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
SET_SUMMARY_SCRIPT = r"""
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

# KEYS: a queue, the erasure tombstone. ARGV: ttl, item, started ms or ''.
PUSH_SCRIPT = r"""
if erased_since(KEYS[2], ARGV[3]) then return 0 end
redis.call('RPUSH', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ttl)
return 1
"""

# KEYS: every key of the task, the reset time last. ARGV: reset at (ms), its TTL.
RESET_SCRIPT = r"""
local stamp = KEYS[#KEYS]
redis.call('DEL', unpack(KEYS, 1, #KEYS - 1))
redis.call('SET', stamp, ARGV[1], 'EX', ARGV[2])
return 1
"""

# KEYS: every key of the task, the erasure tombstone last. ARGV: erased at (ms), the
# tombstone's TTL. A later erasure keeps the latest time.
ERASE_SCRIPT = r"""
local tombstone = KEYS[#KEYS]
redis.call('DEL', unpack(KEYS, 1, #KEYS - 1))
local earlier = tonumber(redis.call('GET', tombstone) or '0')
redis.call('SET', tombstone, tostring(math.max(earlier, tonumber(ARGV[1]))), 'EX', ARGV[2])
return 1
"""
