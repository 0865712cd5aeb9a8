#!lua name=aioqueue___VERSION__
--[[
Every state change of a job, one function each, so that each change is atomic.

Keys of one queue share the hash tag `{queue}`; KEYS[1] is always the queue's
key prefix (`aq:{name}:`) and the function derives the rest of the queue's keys
from it, so every key touched lives in the same cluster slot.

A job is a hash at `<prefix>j:<id>`:
  d  payload written by the producer (opaque bytes)
  s  status: queued | scheduled | active | complete | failed | aborted
  a  attempts started so far, l  of those, lost with a dead worker
  k  token of the current delivery (set by claim, checked by every change)
  w  worker holding the current delivery
  q / st / et / due  enqueued, started, ended, due times (ms, Redis clock)
  r  result bytes, e  error bytes
  wt  how many clients wait for the job's end; wt:<client>  one per waiting client
  ab abort requested: the ttl (ms) the aborted job's record gets
  u  lock the job must hold to run: mode ('w' wait | 'd' drop) then lock name

Every key a Function touches is read and written through `kcall` or checked
by `read_job` first: nothing stored in Redis can make a Function fail half way
(see the garbage area below).

Time is always Redis server time (TIME), never the caller's clock: due times of
delayed jobs (`delay` is added to TIME here; `at` is an absolute instant),
lease deadlines, cron ticks (`cron_fire` refuses a tick before TIME reaches it)
and the wait a worker is told to block for are all on the one Redis clock, so
workers on hosts whose clocks disagree still fire jobs and ticks exactly once
and on time. Blocking timeouts, though, are served by Redis only on its `hz`
tick (100 ms at the default hz 10), so a worker waiting for a due time keeps
its own timer and ends its BLPOP with CLIENT UNBLOCK (see scheduler.py).

Locks (`u`): a job with a lock runs only while it holds `<prefix>lock:<name>`,
whose value is the holder's id and delivery token. claim takes it atomically
with the delivery; finish releases it; it is live only while that delivery is
active with an unexpired lease, so a dead worker's lock lapses with its lease.
A job that finds the lock taken is dropped (mode 'd') or parked (mode 'w') in
the sched set until the holder's lease deadline, and in `<prefix>lockq:<name>`
from which finish hands the lock to the oldest waiter at once.
]]

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

--[[ The garbage area. Redis does not roll a Function back when it errors half
way, so nothing a Function reads may make it error: a key of the wrong type,
a job field that does not parse, a list entry that names no job. Each is moved
(or copied) under `<prefix>garbage:<what>:<ms>` with its raw bytes, never
deleted; `<prefix>garbage` (zset: name -> ms) lists them, `<prefix>garbage:why`
(hash: name -> reason) says why, and `<prefix>garbage:new` holds a line per
set-aside for the next claim to hand to its worker, which logs it. ]]
local NEWS_MAX = 1000 -- unread set-aside lines kept (the set-asides themselves all are)
local kcall -- forward: set-asides write through it, and it sets keys aside

--[[ The event stream `<prefix>events` (docs/reference/events.md): the Function
call that changes a job's state appends what it did, with XADD MAXLEN ~ (a
stream id and `ts` from this Redis's clock). Every Function takes the cap as
its first argument (see `register`); 0 writes nothing. The stream goes
through kcall like any key: a planted value of another type there is set
aside and the entry goes to a fresh stream, the state change goes on. ]]
local EVENTS_MAX = 0
local EVENTS_ARG = '0' -- EVENTS_MAX as the caller sent it, checked digits

-- Numbers go to XADD as strings made here: Redis 7.0 turns a Lua number into
-- an argument with '%.17g', which made number fields cost more than the entry.
local SMALL = {} -- 0 .. 99 as strings, filled as they come (no `string` at load time)
local function int_s(n)
  local v = SMALL[n]
  if v then return v end
  v = string.format('%d', n)
  if n >= 0 and n < 100 and n == math.floor(n) then SMALL[n] = v end
  return v
end
local now_n, now_s = nil, nil -- one conversion of `now` per call, however many entries

-- The string that starts at byte `at` of a MessagePack value, or nil.
local function mp_str(s, at)
  local head = string.byte(s, at)
  if not head then return nil end
  if head >= 0xa0 and head <= 0xbf then -- fixstr
    return string.sub(s, at + 1, at + head - 0xa0)
  elseif head == 0xd9 then -- str 8
    local len = string.byte(s, at + 1)
    if len then return string.sub(s, at + 2, at + 1 + len) end
  elseif head == 0xda then -- str 16
    local hi, lo = string.byte(s, at + 1, at + 2)
    if lo then return string.sub(s, at + 3, at + 2 + hi * 256 + lo) end
  end
  return nil
end

-- The task name in a payload aioqueue wrote (job.py's Envelope, optionally
-- signed as in signing.py): a MessagePack array whose first item is the
-- envelope version, then the task name. nil for anything else: such a job is
-- dispatched as I/O-bound, and the worker that reads it sets it aside if it is
-- garbage. The constants come from the Python side at load (library.py).
local SIGNED_MAGIC, SIGNED_HEADER = '__SIGNED_MAGIC__', __SIGNED_HEADER__
local ENVELOPE_VERSION = __ENVELOPE_VERSION__
local function task_of(payload)
  if not payload then return nil end
  local at = 1
  if string.sub(payload, 1, #SIGNED_MAGIC) == SIGNED_MAGIC then at = SIGNED_HEADER + 1 end
  local array, version = string.byte(payload, at, at + 1)
  if not version or array < 0x92 or array > 0x9f or version ~= ENVELOPE_VERSION then return nil end
  return mp_str(payload, at + 2)
end

-- The exception type an error record names (envelope.py's ErrorInfo: a
-- MessagePack array, the type first); '' when the record is not one.
local function error_type(blob)
  local array = string.byte(blob, 1)
  if not array or array < 0x92 or array > 0x9f then return '' end
  return mp_str(blob, 2) or ''
end

-- Appends one entry; `...` are the optional field/value pairs (never nil,
-- numbers as int_s strings). attempt: a job field's string, or a number.
local function emit(prefix, event, id, task, attempt, now, ...)
  if EVENTS_MAX == 0 then return end
  if now ~= now_n then now_n, now_s = now, string.format('%d', now) end
  if type(attempt) ~= 'string' then attempt = int_s(attempt or 0) end
  kcall(prefix, 'XADD', prefix .. 'events', 'MAXLEN', '~', EVENTS_ARG, '*', 'event', event,
    'job', id, 'task', task or '', 'attempt', attempt, 'ts', now_s, ...)
end

-- The job a key names, when it is a job hash's key.
local function job_of_key(prefix, key)
  if string.sub(key, #prefix + 1, #prefix + 2) == 'j:' then return string.sub(key, #prefix + 3) end
  return nil
end

-- A name in the garbage area no earlier set-aside took.
local function aside_name(prefix, what, now)
  local base = prefix .. 'garbage:' .. what .. ':' .. now
  local dest, n = base, 0
  while redis.call('EXISTS', dest) == 1 do
    n = n + 1
    dest = base .. '.' .. n
  end
  return dest
end

local function record(prefix, dest, reason, now)
  kcall(prefix, 'ZADD', prefix .. 'garbage', now, dest)
  kcall(prefix, 'HSET', prefix .. 'garbage:why', dest, reason)
  local news = prefix .. 'garbage:new'
  kcall(prefix, 'RPUSH', news, dest .. '\0' .. reason)
  kcall(prefix, 'LTRIM', news, -NEWS_MAX, -1)
  kcall(prefix, 'HINCRBY', prefix .. 'stats', 'quarantined', 1)
  redis.log(redis.LOG_WARNING, 'aioqueue: set aside ' .. dest .. ': ' .. reason)
end

-- Moves a key aside whole (its type, value and fields kept, its expiry dropped).
-- A job's is told on the event stream, with its task and attempt if they read.
local function set_aside(prefix, key, reason)
  local now = now_ms()
  local job = EVENTS_MAX > 0 and job_of_key(prefix, key)
  local task, attempt = '', 0
  if job then
    local f = redis.pcall('HMGET', key, 'd', 'a')
    if not f['err'] then
      task = task_of(f[1]) or ''
      if f[2] and string.find(f[2], '^%d+$') then attempt = f[2] end
    end
  end
  local dest = aside_name(prefix, string.sub(key, #prefix + 1), now)
  redis.call('RENAME', key, dest)
  redis.call('PERSIST', dest)
  record(prefix, dest, reason, now)
  if job then emit(prefix, 'set_aside', job, task, attempt, now) end
end

-- Keeps `raw`, an entry of the list or sorted set `source` that is no job, as a string.
local function stray(prefix, source, raw, reason)
  local now = now_ms()
  local dest = aside_name(prefix, source, now)
  redis.call('SET', dest, raw)
  record(prefix, dest, reason, now)
end

-- Errors that the value stored at the key caused (not our arguments).
local function content_error(err)
  return string.find(err, '^WRONGTYPE') or string.find(err, 'not an integer', 1, true)
    or string.find(err, 'would overflow', 1, true)
    or string.find(err, 'last possible ID', 1, true) -- a stream planted with the largest id
end

local function refused(prefix, key, cmd, reply)
  if not content_error(reply.err) then error(reply) end
  local kind = redis.call('TYPE', key)['ok']
  set_aside(prefix, key, cmd .. ' refused this ' .. kind .. ': ' .. reply.err)
end

-- A command on one key of the queue. When the key holds something the command
-- cannot work on (a planted string where a list belongs, a counter that is not
-- a number), the key is set aside and the command runs on a fresh key.
kcall = function(prefix, cmd, key, ...)
  local reply = redis.pcall(cmd, key, ...)
  if type(reply) == 'table' and reply.err then
    refused(prefix, key, cmd, reply)
    reply = redis.call(cmd, key, ...)
  end
  return reply
end

-- Reads job fields; a job key of the wrong type is set aside and reads as missing.
local function job_fields(prefix, jkey, ...)
  local got = redis.pcall('HMGET', jkey, ...)
  if got['err'] then
    set_aside(prefix, jkey, got['err'])
    return {}
  end
  return got
end

local STATUSES = {
  queued = true, scheduled = true, active = true, complete = true, failed = true, aborted = true,
}
-- An integer as HINCRBY reads one (no leading zeros, no '-0'), in at most 12
-- characters: the Lua number a count becomes prints back exactly. One digit,
-- the usual count, without a pattern: claim checks every job it hands out.
local function is_int(v)
  local n = #v
  if n == 1 then return v >= '0' and v <= '9' end
  return n <= 12 and string.find(v, '^%-?[1-9]%d*$') ~= nil
end
-- whether a job field code does arithmetic or lookups on parses (others: any bytes)
local function field_ok(name, v)
  if name == 's' then return STATUSES[v] ~= nil end
  if name == 'a' or name == 'l' or name == 'ab' then return is_int(v) end
  if name == 'u' then
    local mode = string.byte(v, 1)
    return #v >= 2 and (mode == 119 or mode == 100) -- 'w' or 'd', then a name
  end
  return true
end

-- The fields `names` (the first is always 's') of job `jkey`, checked before
-- anything is written: nil, 'missing' when there is no job; nil, 'aside' when
-- the job does not parse (a wrong type, no status, a field field_ok refuses),
-- which is then set aside whole.
local function read_job(prefix, jkey, names)
  local f = redis.pcall('HMGET', jkey, unpack(names))
  if f['err'] then
    local kind = redis.call('TYPE', jkey)['ok']
    set_aside(prefix, jkey, 'a ' .. kind .. ' where a job hash belongs')
    return nil, 'aside'
  end
  if not f[1] then
    if redis.call('EXISTS', jkey) == 0 then return nil, 'missing' end
    set_aside(prefix, jkey, 'job hash without a status')
    return nil, 'aside'
  end
  for i = 1, #names do
    local v = f[i]
    if v and not field_ok(names[i], v) then
      set_aside(prefix, jkey, 'job field ' .. names[i] .. ' does not parse')
      return nil, 'aside'
    end
  end
  return f
end

-- Strict UTF-8 (what the worker decodes ids with), for ids with non-ASCII bytes.
local function utf8_ok(s)
  local i, n = 1, #s
  while i <= n do
    local c = string.byte(s, i)
    local len = 1
    if c >= 0xF0 and c <= 0xF4 then len = 4
    elseif c >= 0xE0 and c <= 0xEF then len = 3
    elseif c >= 0xC2 and c <= 0xDF then len = 2
    elseif c >= 0x80 then return false end
    if i + len - 1 > n then return false end
    for j = i + 1, i + len - 1 do
      local b = string.byte(s, j)
      if b < 0x80 or b > 0xBF then return false end
    end
    local b = string.byte(s, i + 1)
    if (c == 0xE0 and b < 0xA0) or (c == 0xED and b > 0x9F)
        or (c == 0xF0 and b < 0x90) or (c == 0xF4 and b > 0x8F) then
      return false -- overlong, surrogate, past U+10FFFF
    end
    i = i + len
  end
  return true
end

local function valid_id(id)
  if #id == 0 or #id > 800 then return false end
  -- one scan for the common case, a plain ASCII id
  if not string.find(id, '[%s%z\128-\255]') then return true end
  return not string.find(id, '[%s%z]') and utf8_ok(id)
end

-- The job an entry of list or sorted set `source` names, read like read_job;
-- an entry that is not a job id, or names no job, is kept in the garbage area.
local function entry_job(prefix, source, id, names)
  if not valid_id(id) then
    stray(prefix, source, id, source .. ' entry is not a job id')
    return nil
  end
  local f, why = read_job(prefix, prefix .. 'j:' .. id, names)
  if why == 'missing' then stray(prefix, source, id, source .. ' entry names no job') end
  return f
end

-- A numeric argument; `default` for a missing, non-numeric or non-finite one.
local function num_arg(v, default)
  local n = tonumber(v)
  if not n or n ~= n or n == math.huge or n == -math.huge then return default end
  return n
end

-- Runs a variadic command over a long list in chunks (Lua's stack is bounded).
local function bulk(prefix, cmd, key, items)
  for i = 1, #items, 2000 do
    kcall(prefix, cmd, key, unpack(items, i, math.min(i + 1999, #items)))
  end
end

-- One element in the wake list means "there may be work": idle workers block on it.
local function signal(prefix)
  local wake = prefix .. 'wake'
  if kcall(prefix, 'LLEN', wake) == 0 then
    redis.call('RPUSH', wake, '1')
  end
end

-- Publishes the end of a job to the clients waiting for it and forgets them
-- (``waiters`` is the job's `wt` field, read by the caller with the fields it
-- needed anyway: the count of `wt:<client>` fields; before them, a list of ids).
-- A client id 's:<id>' is a cluster client: its channel is sharded and lives
-- in this queue's slot, so the message stays in this shard (no bus broadcast).
local function notify(prefix, id, jkey, status, blob, waiters)
  if not waiters then return end
  local clients = {}
  if tonumber(waiters) then
    local fields = {}
    for _, field in ipairs(redis.call('HKEYS', jkey)) do
      if string.sub(field, 1, 3) == 'wt:' then
        fields[#fields + 1] = field
        clients[#clients + 1] = string.sub(field, 4)
      end
    end
    for i = 1, #fields, 2000 do
      redis.call('HDEL', jkey, unpack(fields, i, math.min(i + 1999, #fields)))
    end
  else
    for cid in string.gmatch(waiters, '%S+') do clients[#clients + 1] = cid end
  end
  redis.call('HDEL', jkey, 'wt')
  local queue = string.sub(prefix, 5, -3) -- 'aq:{' .. name .. '}:'
  local msg = queue .. '\0' .. id .. '\0' .. status .. '\0' .. (blob or '')
  for _, cid in ipairs(clients) do
    if string.sub(cid, 1, 2) == 's:' then
      redis.call('SPUBLISH', prefix .. 'client:' .. string.sub(cid, 3), msg)
    else
      redis.call('PUBLISH', 'aq:client:' .. cid, msg)
    end
  end
end

local function schedule(prefix, id, jkey, due)
  local sched = prefix .. 'sched'
  local first = kcall(prefix, 'ZRANGE', sched, 0, 0, 'WITHSCORES')
  kcall(prefix, 'ZADD', sched, due, id)
  redis.call('HSET', jkey, 's', 'scheduled', 'due', due)
  -- An earlier due time than any known wakes an idle worker to shorten its wait.
  if first[2] == nil or due < tonumber(first[2]) then
    signal(prefix)
  end
end

-- A job record's expiry once it has ended: 0 is "not stored", < 0 "kept".
local function expire_record(jkey, ttl)
  if ttl == 0 then
    redis.call('DEL', jkey)
  elseif ttl > 0 then
    redis.call('PEXPIRE', jkey, ttl)
  end
end

-- Ends a job whose abort was asked for while it was active, at the point it
-- would run again instead (its worker died, or its outcome was a retry or a
-- hand-back): an aborted job never starts again. ab: the job's `ab` field, the
-- record's ttl the abort asked for; task, attempt and `...` go to its event.
local function abort_now(prefix, id, jkey, ab, now, task, attempt, ...)
  -- an ErrorInfo: type, message, traceback, timed_out, code (_protocol/codes.py)
  local blob = cmsgpack.pack({'aioqueue.errors.JobAborted', 'aborted while it was not running',
    '', false, 'aborted'})
  local waiters = redis.call('HGET', jkey, 'wt')
  redis.call('HSET', jkey, 's', 'aborted', 'e', blob, 'et', now)
  redis.call('HDEL', jkey, 'ab', 'wt')
  kcall(prefix, 'HINCRBY', prefix .. 'stats', 'aborted', 1)
  notify(prefix, id, jkey, 'aborted', blob, waiters)
  expire_record(jkey, tonumber(ab))
  emit(prefix, 'aborted', id, task, attempt, now, ...)
end

-- Move due scheduled jobs and expired leases to the front of the ready list,
-- a bounded number per call so that a huge backlog never blocks Redis.
-- Returns how many due jobs and how many expired leases it moved.
local REAP_FIELDS = {'s', 'l', 'ab', 'a', 'w', 'd'}
local function promote_and_reap(prefix, now, limit)
  -- removals and pushes go in one call each: per id only the job hash is touched
  local ready = prefix .. 'ready'
  local moved = {}
  local sched = prefix .. 'sched'
  local promoted, reaped = 0, 0
  local due = kcall(prefix, 'ZRANGE', sched, '-inf', now, 'BYSCORE', 'LIMIT', 0, limit)
  if #due > 0 then
    bulk(prefix, 'ZREM', sched, due)
    for _, id in ipairs(due) do
      local f = entry_job(prefix, 'sched', id, {'s'})
      if f and f[1] == 'scheduled' then
        redis.call('HSET', prefix .. 'j:' .. id, 's', 'queued')
        moved[#moved + 1] = id
        promoted = promoted + 1
      end
    end
  end
  local active = prefix .. 'active'
  local expired = kcall(prefix, 'ZRANGE', active, '-inf', now, 'BYSCORE', 'LIMIT', 0, limit)
  if #expired > 0 then
    bulk(prefix, 'ZREM', active, expired)
    for _, id in ipairs(expired) do
      local jkey = prefix .. 'j:' .. id
      local f = entry_job(prefix, 'active', id, REAP_FIELDS)
      if f and f[1] == 'active' then
        local task = EVENTS_MAX > 0 and task_of(f[6]) or ''
        if f[3] then
          abort_now(prefix, id, jkey, f[3], now, task, f[4], 'worker', f[5] or '')
        else
          -- `due`: when it became ready again, what a claim's wait_ms counts from
          redis.call('HSET', jkey, 's', 'queued', 'due', now)
          redis.call('HDEL', jkey, 'k', 'w')
          redis.call('HINCRBY', jkey, 'l', 1)
          moved[#moved + 1] = id
          emit(prefix, 'reclaimed', id, task, f[4] or 0, now, 'worker', f[5] or '')
        end
        reaped = reaped + 1
      end
    end
    if reaped > 0 then kcall(prefix, 'HINCRBY', prefix .. 'stats', 'reaped', reaped) end
  end
  if #moved > 0 then bulk(prefix, 'RPUSH', ready, moved) end
  return promoted, reaped
end

-- Microseconds until the next scheduled job or lease deadline, -1 when none.
-- Not milliseconds from now_ms(): its truncation alone made waits up to 1 ms long.
local function next_event(prefix)
  local t = redis.call('TIME')
  local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local best = -1
  for _, name in ipairs({'sched', 'active'}) do
    local first = kcall(prefix, 'ZRANGE', prefix .. name, 0, 0, 'WITHSCORES')
    if first[2] ~= nil then
      local wait = math.max(0, tonumber(first[2]) * 1000 - now_us)
      if best < 0 or wait < best then best = wait end
    end
  end
  return best
end

-- Jobs a lock holder outlives are re-examined after this long past its lease
-- deadline at the latest; and dropped jobs are kept this long for `info`.
local LOCK_RECHECK_MS = 50
local DROPPED_TTL_MS = 3600000

-- True when `value` ('<id> <token>') names a delivery that is still running;
-- then also its id and lease deadline.
local function lock_live(prefix, value, now)
  if not value then return false end
  local hid, htoken = string.match(value, '^(%S+) (%S+)$')
  if not hid then return false end
  local held = job_fields(prefix, prefix .. 'j:' .. hid, 's', 'k')
  if held[1] ~= 'active' or held[2] ~= htoken then return false end
  local deadline = kcall(prefix, 'ZSCORE', prefix .. 'active', hid)
  -- no lease yet: claimed earlier in this same claim call (leases are added last)
  if deadline == false then return true, hid, nil end
  return tonumber(deadline) >= now, hid, tonumber(deadline)
end

-- The lock's value; one that is not '<id> <token>' is set aside (reads as free).
local function lock_value(prefix, lkey)
  local got = redis.pcall('GET', lkey)
  if type(got) == 'table' and got['err'] then
    set_aside(prefix, lkey, got['err'])
    return nil
  end
  if got and not string.find(got, '^%S+ %S+$') then
    set_aside(prefix, lkey, 'lock value is not "<job id> <token>"')
    return nil
  end
  return got
end

-- Takes the lock named in `u` for this delivery, or drops or parks the job.
-- Returns true when the job may run. lease_end: the lease of a holder claimed
-- in the same call, whose deadline is not stored yet; task, attempt: for its event.
local function take_lock(prefix, id, jkey, token, u, now, lease_end, task, attempt)
  local name = string.sub(u, 2)
  local lkey = prefix .. 'lock:' .. name
  local live, holder, deadline = lock_live(prefix, lock_value(prefix, lkey), now)
  if not live or holder == id then
    redis.call('SET', lkey, id .. ' ' .. token)
    kcall(prefix, 'ZREM', prefix .. 'lockq:' .. name, id)
    return true
  end
  if string.sub(u, 1, 1) == 'd' then
    local blob = cmsgpack.pack({'aioqueue.LockHeld', 'lock ' .. name .. ' held by job ' .. holder,
      '', false, 'lock_held'})
    local waiters = redis.call('HGET', jkey, 'wt')
    redis.call('HSET', jkey, 's', 'aborted', 'e', blob, 'et', now)
    kcall(prefix, 'HINCRBY', prefix .. 'stats', 'dropped', 1)
    notify(prefix, id, jkey, 'aborted', blob, waiters)
    if waiters then redis.call('HDEL', jkey, 'wt') end
    redis.call('PEXPIRE', jkey, DROPPED_TTL_MS)
    emit(prefix, 'aborted', id, task, attempt, now)
  else
    -- parked, not polled: finish wakes the oldest waiter; the due time is the
    -- safety net for a holder that dies (its lock lapses with its lease)
    kcall(prefix, 'ZADD', prefix .. 'lockq:' .. name, 'NX', now, id)
    local due = math.max(deadline or lease_end, now) + LOCK_RECHECK_MS
    schedule(prefix, id, jkey, due)
    emit(prefix, 'scheduled', id, task, attempt, now, 'due', int_s(due))
  end
  return false
end

-- Releases the lock if this delivery holds it and hands it to the oldest waiter.
local function release_lock(prefix, id, token, u)
  local name = string.sub(u, 2)
  local lkey = prefix .. 'lock:' .. name
  if lock_value(prefix, lkey) ~= id .. ' ' .. token then return end
  redis.call('DEL', lkey)
  local lockq = prefix .. 'lockq:' .. name
  for _ = 1, 100 do
    local first = kcall(prefix, 'ZPOPMIN', lockq)
    local wid = first[1]
    if not wid then return end
    local wkey = prefix .. 'j:' .. wid
    local status = nil
    if valid_id(wid) then
      status = job_fields(prefix, wkey, 's')[1]
    else
      stray(prefix, 'lockq:' .. name, wid, 'lock queue entry is not a job id')
    end
    -- a waiter aborted, or whose record expired since, is just passed over
    if status == 'queued' then return end -- already on its way to a worker
    if status == 'scheduled' then
      kcall(prefix, 'ZREM', prefix .. 'sched', wid)
      redis.call('HSET', wkey, 's', 'queued')
      kcall(prefix, 'RPUSH', prefix .. 'ready', wid)
      signal(prefix)
      return
    end
  end
end

--[[ enqueue(prefix; max_length, [id, payload, delay_ms, at_ms, lock] ...)
Returns per job: 'new' or the status of the job that already has this id.
lock: '' or the job's `u` field (mode letter then lock name).
With max_length > 0 the whole batch is refused (error QUEUEFULL) when the
queued and scheduled jobs plus the batch would exceed it. ]]
local function enqueue(keys, args)
  local prefix = keys[1]
  local max_length = tonumber(args[1])
  for i = 2, #args, 5 do
    if not (num_arg(args[i + 2], nil) and num_arg(args[i + 3], nil) and args[i + 4]) then
      return redis.error_reply('ERR enqueue: malformed job ' .. tostring(args[i]))
    end
  end
  if not max_length then return redis.error_reply('ERR enqueue: malformed max_length') end
  if max_length > 0 then
    local held = kcall(prefix, 'LLEN', prefix .. 'ready') + kcall(prefix, 'ZCARD', prefix .. 'sched')
      + kcall(prefix, 'LLEN', prefix .. 'cpu') -- CPU-bound jobs a claim moved aside
    if held + (#args - 1) / 5 > max_length then
      return redis.error_reply("QUEUEFULL queue '" .. string.sub(prefix, 5, -3) .. "' holds "
        .. held .. ' jobs; its limit is ' .. max_length)
    end
  end
  local now = now_ms()
  local out = {}
  local pushed = {}
  for i = 2, #args, 5 do
    local id, payload = args[i], args[i + 1]
    local delay, at = tonumber(args[i + 2]), tonumber(args[i + 3])
    local jkey = prefix .. 'j:' .. id
    -- one TYPE answers "is the id free" for a new job, the hottest case
    local existing = nil
    local kind = redis.call('TYPE', jkey)['ok']
    if kind == 'hash' then
      local f = read_job(prefix, jkey, {'s'}) -- a hash that is no job is set aside
      existing = f and f[1]
    elseif kind ~= 'none' then
      set_aside(prefix, jkey, 'a ' .. kind .. ' where a job hash belongs')
    end
    if existing then
      out[#out + 1] = existing
    else
      local due = 0
      if at > 0 then due = at elseif delay > 0 then due = now + delay end
      local lock = args[i + 4]
      local task = EVENTS_MAX > 0 and task_of(payload) or ''
      if due > now then
        redis.call('HSET', jkey, 'd', payload, 'a', 0, 'q', now)
        schedule(prefix, id, jkey, due)
        emit(prefix, 'scheduled', id, task, 0, now, 'due', int_s(due))
      else
        redis.call('HSET', jkey, 'd', payload, 'a', 0, 'q', now, 's', 'queued')
        pushed[#pushed + 1] = id
        emit(prefix, 'enqueued', id, task, 0, now)
      end
      if lock ~= '' then redis.call('HSET', jkey, 'u', lock) end
      out[#out + 1] = 'new'
    end
  end
  if #pushed > 0 then
    bulk(prefix, 'LPUSH', prefix .. 'ready', pushed)
    signal(prefix)
  end
  return out
end

-- The next delivery token counter. One that is not a counter is set aside and
-- the new one starts at the Redis time in ms, past any token the old one gave.
local function next_seq(prefix, now)
  local key = prefix .. 'seq'
  local seq = redis.pcall('INCR', key)
  if type(seq) == 'table' then
    refused(prefix, key, 'INCR', seq)
    seq = redis.call('INCRBY', key, now)
  end
  return seq
end

-- A claim whose reply was lost (its link dropped) and that the worker sends
-- again must hand back the same deliveries, not take new ones: those would be
-- leased to nobody until their lease ran out. So each claim carries an id, and
-- the last claim of each worker on this queue is kept for one lease as
-- '<claim id> <job id> <token> ...'. A replay hands back those still active
-- under their token, in claim's reply layout.
local function replay_claim(prefix, worker, cid)
  local key = prefix .. 'claimed:' .. worker
  local got = redis.pcall('GET', key)
  if type(got) == 'table' and got['err'] then
    -- before any write: a refusal (an ACL without this key) fails the claim whole
    if not content_error(got['err']) then error(got) end
    set_aside(prefix, key, 'a ' .. redis.call('TYPE', key)['ok'] .. ' where a claim record belongs')
    return nil
  end
  if not got or string.sub(got, 1, #cid + 1) ~= cid .. ' ' then return nil end
  local parts = {}
  for part in string.gmatch(got, '%S+') do parts[#parts + 1] = part end
  local waiting = redis.pcall('LLEN', prefix .. 'cpu')
  if type(waiting) ~= 'number' then waiting = 0 end
  local out = {0, 0, 0, waiting, 0}
  for i = 2, #parts - 3, 4 do
    local id, token, cpu_bound, wait = parts[i], parts[i + 1], parts[i + 2], parts[i + 3]
    local f = read_job(prefix, prefix .. 'j:' .. id, {'s', 'k', 'a', 'l', 'd', 'u'})
    if f and f[1] == 'active' and f[2] == token then
      out[#out + 1] = id
      out[#out + 1] = token
      out[#out + 1] = tonumber(f[3] or 0)
      out[#out + 1] = tonumber(f[4] or 0)
      out[#out + 1] = f[5] or ''
      out[#out + 1] = f[6] or ''
      out[#out + 1] = tonumber(cpu_bound) or 0
      out[#out + 1] = tonumber(wait) or -1
    end
  end
  out[1] = next_event(prefix)
  return out
end

-- jobs: claim's eight values per delivery (id, token first)
local function remember_claim(prefix, worker, cid, jobs, lease)
  lease = math.floor(lease)
  if #jobs == 0 or lease < 1 then return end -- SET PX refuses 0: nothing may fail after writes
  local parts = {cid}
  for i = 1, #jobs, 8 do
    parts[#parts + 1] = jobs[i]
    parts[#parts + 1] = jobs[i + 1]
    parts[#parts + 1] = jobs[i + 6] -- CPU-bound: 1 or 0
    parts[#parts + 1] = string.format('%d', jobs[i + 7]) -- the wait (ms, -1: unknown)
  end
  kcall(prefix, 'SET', prefix .. 'claimed:' .. worker, table.concat(parts, ' '), 'PX', lease)
end

-- Job fields claim reads, checked (read_job) before it changes anything.
local CLAIM_FIELDS = {'s', 'a', 'l', 'd', 'u', 'ab', 'q', 'due'}

-- ids looked at per claim beyond the n asked for: bounds the Redis time of a
-- claim that moves CPU-bound jobs aside or passes over entries left behind
local SCAN_SLACK = 500

--[[ claim(prefix; n, worker, lease_ms, promote_limit, claim_id, cpu_free, run_free, cpu_task ...)
Returns {wait_us, promoted, reaped, aside, k, <k set-aside lines>,
id1, token1, attempt1, lost1, payload1, lock1, cpu1, wait1, ...}. wait_us is how long
(in microseconds) an idle worker may block before something (a due job, an
expired lease) needs it; promoted and reaped count the due jobs and expired
leases this call moved to the ready list (each at most promote_limit); aside
is how many CPU-bound jobs wait in `cpu`; a set-aside line is
'<garbage key>\0<reason>' for the worker to log, of this or any earlier call.
lost counts deliveries of the job whose worker died; lock is its `u` field or
''; cpu is 1 for a job of one of the worker's CPU-bound tasks; wait is the ms
the job waited since it was due (or enqueued), -1 when unknown. An entry of the
ready list that names no job, and a job that does not parse, are set aside;
the rest of the batch is claimed as usual. A claim_id sent again (after a lost
reply) returns the deliveries that call made (see replay_claim).

Fair dispatch: the worker names its CPU-bound tasks (cpu_task ...), how many
more of their deliveries it can run (cpu_free) and how many more jobs of any
kind it can start now (run_free). It gets a CPU-bound job only if both allow
it at the job's place in this claim, so that the job starts at once rather
than wait behind others. A job of such a task past that is not taken: it
moves, oldest first, to the `cpu` list, and `cwake` wakes an idle worker with
a free CPU slot. The other jobs keep their order in `ready`. The `cpu` list is
served first (its jobs are older than those left in `ready`) to every worker
with a free slot; a worker that names no CPU-bound task takes its jobs like
any other, so none is stranded once the workers that moved them aside are gone. ]]
local function claim(keys, args)
  local prefix = keys[1]
  local n, worker, lease = tonumber(args[1]), args[2], tonumber(args[3])
  local limit = tonumber(args[4])
  local cid = args[5] or ''
  local cpu_free, run_free = tonumber(args[6] or 0), tonumber(args[7] or args[1])
  if not (n and lease and limit and cpu_free and run_free) then
    return redis.error_reply('ERR claim: malformed arguments')
  end
  if cid ~= '' then
    local again = replay_claim(prefix, worker, cid)
    if again then return again end
  end
  local cpu = nil
  if #args > 7 then
    cpu = {}
    for i = 8, #args do cpu[args[i]] = true end
    -- the worker blocks on its own nudge list too: a planted value there is set aside
    kcall(prefix, 'LLEN', prefix .. 'nudge:' .. worker)
  end
  local now = now_ms()
  local promoted, reaped = promote_and_reap(prefix, now, limit)
  local ready, aside = prefix .. 'ready', prefix .. 'cpu'
  local jobs = {}
  local leases = {}
  local deadline = now + lease
  local seq = nil
  local taken, cpu_taken, looked = 0, 0, 0

  -- A queued job of one of the worker's CPU-bound tasks (an abort asked for
  -- while it was queued is not run: it ends below, wherever it is).
  local function is_cpu(f)
    return cpu ~= nil and f ~= nil and f[1] == 'queued' and f[4] ~= nil and not f[6]
      and cpu[task_of(f[4])] == true
  end

  -- Claims one entry's job if it is queued (and its lock free); passes over the rest.
  local function take(id, f, cpu_bound)
    if not seq then seq = next_seq(prefix, now) end
    looked = looked + 1
    local jkey = prefix .. 'j:' .. id
    local status = f and f[1]
    local token = seq .. '.' .. looked
    if status == 'queued' then
      if not f[4] then
        set_aside(prefix, jkey, 'queued job without a payload')
        status = 'aside'
      elseif f[6] then
        abort_now(prefix, id, jkey, f[6], now, task_of(f[4]), f[2] or 0)
        status = 'aborted'
      elseif f[5] and not take_lock(prefix, id, jkey, token, f[5], now, deadline,
          EVENTS_MAX > 0 and task_of(f[4]) or '', f[2] or 0) then
        status = 'locked' -- dropped or parked by take_lock
      end
    elseif status == 'aborted' and f[6] then
      -- aborted while queued: its record's expiry starts now that its entry is gone
      redis.call('HDEL', jkey, 'ab')
      expire_record(jkey, tonumber(f[6]))
    elseif status == 'aborted' and not f[4] then
      redis.call('DEL', jkey) -- the tombstone of a job aborted with result_ttl=0
    end
    if status == 'queued' then
      local attempt = tonumber(f[2] or 0) + 1
      redis.call('HSET', jkey, 's', 'active', 'k', token, 'w', worker, 'st', now, 'a', attempt)
      leases[#leases + 1] = deadline
      leases[#leases + 1] = id
      jobs[#jobs + 1] = id
      jobs[#jobs + 1] = token
      jobs[#jobs + 1] = attempt
      jobs[#jobs + 1] = tonumber(f[3] or 0)
      jobs[#jobs + 1] = f[4]
      jobs[#jobs + 1] = f[5] or ''
      jobs[#jobs + 1] = cpu_bound and 1 or 0
      -- waited since it was due (scheduled, retried, back from a dead worker) or
      -- enqueued; -1: neither time is known (a job an older version stored)
      local since = math.max(tonumber(f[7]) or 0, tonumber(f[8]) or 0)
      local wait = since > 0 and math.max(0, now - since) or -1
      jobs[#jobs + 1] = wait
      taken = taken + 1
      if cpu_bound then cpu_taken = cpu_taken + 1 end
      if EVENTS_MAX > 0 then
        if wait >= 0 then
          emit(prefix, 'started', id, task_of(f[4]), attempt, now, 'worker', worker,
            'wait_ms', int_s(wait))
        else
          emit(prefix, 'started', id, task_of(f[4]), attempt, now, 'worker', worker)
        end
      end
    end
    -- other statuses (an entry left behind) are passed over
  end

  local k = n
  if cpu ~= nil then k = math.min(n, cpu_free, run_free) end
  if k > 0 then
    local ids = kcall(prefix, 'RPOP', aside, k)
    if ids then
      for _, id in ipairs(ids) do
        local f = entry_job(prefix, 'cpu', id, CLAIM_FIELDS)
        take(id, f, is_cpu(f))
      end
    end
  end
  local moved = {}
  while taken < n and looked + #moved < n + SCAN_SLACK do
    local ids = kcall(prefix, 'RPOP', ready, n - taken)
    if not ids then break end
    for _, id in ipairs(ids) do
      local f = entry_job(prefix, 'ready', id, CLAIM_FIELDS)
      local cpu_bound = is_cpu(f)
      if cpu_bound and (cpu_taken >= cpu_free or taken >= run_free) then
        moved[#moved + 1] = id
      else
        take(id, f, cpu_bound)
      end
    end
  end
  if #moved > 0 then bulk(prefix, 'LPUSH', aside, moved) end -- oldest nearest the tail
  if #leases > 0 then bulk(prefix, 'ZADD', prefix .. 'active', leases) end
  if kcall(prefix, 'LLEN', ready) > 0 then
    signal(prefix)
  else
    kcall(prefix, 'LTRIM', prefix .. 'wake', 1, 0) -- empties it; a planted value is set aside
  end
  if cid ~= '' then remember_claim(prefix, worker, cid, jobs, lease) end
  local cwake = prefix .. 'cwake'
  local waiting = kcall(prefix, 'LLEN', aside)
  if waiting > 0 then
    if kcall(prefix, 'LLEN', cwake) == 0 then redis.call('RPUSH', cwake, '1') end
  else
    kcall(prefix, 'LTRIM', cwake, 1, 0)
  end
  local out = {next_event(prefix), promoted, reaped, waiting, 0}
  local news = kcall(prefix, 'LPOP', prefix .. 'garbage:new', 100) or {}
  out[5] = #news
  for _, line in ipairs(news) do out[#out + 1] = line end
  for _, v in ipairs(jobs) do out[#out + 1] = v end
  return out
end

-- Jobs finished per 10-second bucket (`tput:<bucket>`, kept 2 minutes), for
-- `aioqueue info`: two commands per finish call, whatever the batch size.
local TPUT_BUCKET_MS = 10000
local function count_finished(prefix, now, n)
  if n > 0 then
    local key = prefix .. 'tput:' .. math.floor(now / TPUT_BUCKET_MS)
    kcall(prefix, 'INCRBY', key, n)
    redis.call('EXPIRE', key, 120)
  end
end

-- Attempts ended per minute by outcome (`tpm:<minute>`, hash outcome -> count,
-- kept a little over an hour): the dashboard's hour of throughput and failure
-- rate. One HINCRBY per outcome the batch had, and one EXPIRE.
local MINUTE_MS = 60000
local MINUTE_OUTCOMES = {'complete', 'failed', 'retried', 'aborted'}
local function count_minute(prefix, now, counts)
  local key = prefix .. 'tpm:' .. math.floor(now / MINUTE_MS)
  local any = false
  for _, outcome in ipairs(MINUTE_OUTCOMES) do
    local n = counts[outcome]
    if n then
      kcall(prefix, 'HINCRBY', key, outcome, n)
      any = true
    end
  end
  if any then redis.call('EXPIRE', key, 3720) end
end

local OUTCOMES = {complete = true, failed = true, retry = true, release = true, aborted = true}
local FINISH_FIELDS = {'s', 'k', 'wt', 'u', 'a', 'ab'}
-- and with the event stream on: start time, worker, payload (for the task name)
local FINISH_EVENT_FIELDS = {'s', 'k', 'wt', 'u', 'a', 'ab', 'st', 'w', 'd'}

--[[ finish(prefix; [id, token, outcome, blob, ttl_ms, delay_ms] ...)
outcome: complete | failed | retry | release | aborted.
Returns per item 1; 0 when the token no longer owns the job (stale); 2 when
the job no longer parses and was set aside. A retry or hand-back of a job whose
abort was asked for ends it as aborted. ]]
local function finish(keys, args)
  local prefix = keys[1]
  for i = 1, #args, 6 do
    if not (OUTCOMES[args[i + 2]] and args[i + 3] and num_arg(args[i + 4], nil)
        and num_arg(args[i + 5], nil)) then
      return redis.error_reply('ERR finish: malformed outcome for ' .. tostring(args[i]))
    end
  end
  local now = now_ms()
  local out = {}
  local counts = {}
  local done = {}
  local finished = 0
  local fields = EVENTS_MAX > 0 and FINISH_EVENT_FIELDS or FINISH_FIELDS
  for i = 1, #args, 6 do
    local id, token, outcome, blob = args[i], args[i + 1], args[i + 2], args[i + 3]
    local ttl, delay = num_arg(args[i + 4]), num_arg(args[i + 5])
    local jkey = prefix .. 'j:' .. id
    local held, why = read_job(prefix, jkey, fields)
    if why == 'aside' then
      done[#done + 1] = id
      out[#out + 1] = 2
    elseif not held or held[1] ~= 'active' or held[2] ~= token then
      counts['stale'] = (counts['stale'] or 0) + 1
      out[#out + 1] = 0
    else
      done[#done + 1] = id
      -- what its event says: the attempt's task, worker and run time (Redis clock)
      local task, attempt, worker, ran = '', held[5] or 0, '', '0'
      if EVENTS_MAX > 0 then
        task, worker = task_of(held[9]) or '', held[8] or ''
        ran = int_s(math.max(0, now - (tonumber(held[7]) or now)))
      end
      if held[4] then release_lock(prefix, id, token, held[4]) end
      if held[6] and (outcome == 'release' or outcome == 'retry') then
        abort_now(prefix, id, jkey, held[6], now, task, attempt, 'worker', worker,
          'duration_ms', ran)
      -- the token `k` may stay: it only counts while the status is active
      elseif outcome == 'release' then
        redis.call('HINCRBY', jkey, 'a', -1)
        redis.call('HSET', jkey, 's', 'queued', 'due', now)
        kcall(prefix, 'RPUSH', prefix .. 'ready', id)
        signal(prefix)
        emit(prefix, 'released', id, task, attempt, now, 'worker', worker)
      elseif outcome == 'retry' then
        redis.call('HSET', jkey, 'e', blob)
        counts['retried'] = (counts['retried'] or 0) + 1
        if delay > 0 then
          schedule(prefix, id, jkey, now + delay)
        else
          redis.call('HSET', jkey, 's', 'queued', 'due', now)
          kcall(prefix, 'LPUSH', prefix .. 'ready', id)
          signal(prefix)
        end
        emit(prefix, 'retried', id, task, attempt, now, 'worker', worker, 'duration_ms', ran,
          'error', EVENTS_MAX > 0 and error_type(blob) or '',
          'due', EVENTS_MAX > 0 and int_s(now + math.max(delay, 0)) or '')
      else
        local field = 'r'
        if outcome ~= 'complete' then field = 'e' end
        counts[outcome] = (counts[outcome] or 0) + 1
        finished = finished + 1
        notify(prefix, id, jkey, outcome, blob, held[3])
        if ttl == 0 and outcome ~= 'failed' then
          redis.call('DEL', jkey)
        else
          redis.call('HSET', jkey, 's', outcome, field, blob, 'et', now)
          if held[3] then redis.call('HDEL', jkey, 'wt') end
          if outcome == 'failed' then
            kcall(prefix, 'ZADD', prefix .. 'dead', now, id)
          elseif ttl > 0 then
            redis.call('PEXPIRE', jkey, ttl)
          end
        end
        if outcome == 'failed' then
          -- the attempt that ended it, then its move to the dead-letter set
          local err = EVENTS_MAX > 0 and error_type(blob) or ''
          emit(prefix, 'failed', id, task, attempt, now, 'worker', worker, 'duration_ms', ran,
            'error', err)
          emit(prefix, 'dead', id, task, attempt, now, 'worker', worker, 'duration_ms', ran,
            'error', err)
        else
          emit(prefix, outcome == 'complete' and 'completed' or 'aborted', id, task, attempt, now,
            'worker', worker, 'duration_ms', ran)
        end
      end
      out[#out + 1] = 1
    end
  end
  if #done > 0 then bulk(prefix, 'ZREM', prefix .. 'active', done) end
  for name, n in pairs(counts) do
    kcall(prefix, 'HINCRBY', prefix .. 'stats', name, n)
  end
  count_finished(prefix, now, finished)
  count_minute(prefix, now, counts)
  return out
end

--[[ heartbeat(prefix; worker, lease_ms, info, registry_ttl_ms, [id, token] ...)
Extends the leases the worker still holds; returns {token, reason, ...} for the
deliveries it must stop (a worker may hold two of one job after a stall):
reason 'abort' (requested) or 'lost' (no longer its own). ]]
local function heartbeat(keys, args)
  local prefix = keys[1]
  local worker, lease, info, ttl = args[1], tonumber(args[2]), args[3], tonumber(args[4])
  if not (lease and ttl and info) then
    return redis.error_reply('ERR heartbeat: malformed arguments')
  end
  local now = now_ms()
  local workers, winfo = prefix .. 'workers', prefix .. 'winfo'
  kcall(prefix, 'ZADD', workers, now, worker)
  kcall(prefix, 'HSET', winfo, worker, info)
  local gone = kcall(prefix, 'ZRANGE', workers, '-inf', now - ttl, 'BYSCORE', 'LIMIT', 0, 100)
  if #gone > 0 then
    kcall(prefix, 'ZREM', workers, unpack(gone))
    kcall(prefix, 'HDEL', winfo, unpack(gone))
  end
  local stop = {}
  for i = 5, #args, 2 do
    local id, token = args[i], args[i + 1]
    local jkey = prefix .. 'j:' .. id
    local held = job_fields(prefix, jkey, 's', 'k', 'ab')
    if held[1] ~= 'active' or held[2] ~= token then
      stop[#stop + 1] = token
      stop[#stop + 1] = 'lost'
    elseif held[3] then
      stop[#stop + 1] = token
      stop[#stop + 1] = 'abort'
    else
      kcall(prefix, 'ZADD', prefix .. 'active', 'XX', now + lease, id)
    end
  end
  -- jobs it made ready must wake an idle worker, not wait for its next look
  local promoted, reaped = promote_and_reap(prefix, now, 100)
  if promoted + reaped > 0 then signal(prefix) end
  return stop
end

-- The schedule registered for a cron name (`<prefix>crondef`), false when none.
local function cron_definition(prefix, name)
  return kcall(prefix, 'HGET', prefix .. 'crondef', name)
end

--[[ cron_define(prefix; name, definition)
A worker starting with cron job `name` registers its schedule: the newest
definition wins, the workers with another one stop firing that name
(cron_fire answers 'superseded'). Returns the definition it replaced, or false. ]]
local function cron_define(keys, args)
  local prefix, name, definition = keys[1], args[1], args[2]
  if not definition then return redis.error_reply('ERR cron_define: malformed arguments') end
  local previous = cron_definition(prefix, name)
  kcall(prefix, 'HSET', prefix .. 'crondef', name, definition)
  return previous
end

--[[ cron_fire(prefix; name, tick_ms, id, payload, lock, definition)
Fires one tick of the cron job `name` at most once, whichever worker asks first:
`<prefix>cron` keeps the last tick fired per name and only a later tick fires.
Returns {'fired' | 'dup' | 'overlap' | 'superseded', now} or {'early', ms to
wait}; 'overlap' consumes the tick without a job because the lock (no_overlap)
is still held; 'superseded': `name` has another definition now (cron_define),
the caller's schedule is an old one. definition '': not checked. ]]
local function cron_fire(keys, args)
  local prefix = keys[1]
  local name, tick, id, payload, lock = args[1], tonumber(args[2]), args[3], args[4], args[5]
  if not (tick and payload and lock) then
    return redis.error_reply('ERR cron_fire: malformed arguments')
  end
  local definition = args[6] or ''
  local now = now_ms()
  if now < tick then return {'early', tick - now} end
  local registered = false
  if definition ~= '' then
    registered = cron_definition(prefix, name)
    if registered and registered ~= definition then return {'superseded', now} end
  end
  local crons = prefix .. 'cron'
  local last = kcall(prefix, 'HGET', crons, name)
  if last and not string.find(last, '^%d+$') then
    set_aside(prefix, crons, 'last tick of cron ' .. name .. ' is not a number')
    last = false
  end
  if last and tonumber(last) >= tick then return {'dup', now} end
  kcall(prefix, 'HSET', crons, name, tick)
  if definition ~= '' and not registered then
    kcall(prefix, 'HSET', prefix .. 'crondef', name, definition)
  end
  if lock ~= '' then
    local lkey = prefix .. 'lock:' .. string.sub(lock, 2)
    if lock_live(prefix, lock_value(prefix, lkey), now) then
      kcall(prefix, 'HINCRBY', prefix .. 'stats', 'cron_overlap', 1)
      return {'overlap', now}
    end
  end
  local jkey = prefix .. 'j:' .. id
  local kind = redis.call('TYPE', jkey)['ok']
  if kind == 'hash' then
    if read_job(prefix, jkey, {'s'}) then return {'dup', now} end
  elseif kind ~= 'none' then
    set_aside(prefix, jkey, 'a ' .. kind .. ' where a job hash belongs')
  end
  redis.call('HSET', jkey, 'd', payload, 'a', 0, 'q', now, 's', 'queued')
  if lock ~= '' then redis.call('HSET', jkey, 'u', lock) end
  kcall(prefix, 'LPUSH', prefix .. 'ready', id)
  signal(prefix)
  emit(prefix, 'enqueued', id, EVENTS_MAX > 0 and task_of(payload) or '', 0, now)
  return {'fired', now}
end

--[[ deregister(prefix; worker) ]]
local function deregister(keys, args)
  kcall(keys[1], 'ZREM', keys[1] .. 'workers', args[1])
  kcall(keys[1], 'HDEL', keys[1] .. 'winfo', args[1])
  return 1
end

--[[ abort(prefix; id, ttl_ms)
Returns the status before the abort: a queued or scheduled job is aborted at
once (its record kept ttl_ms; 0: deleted; negative: kept), an active one is
flagged and its workers told on the abort channel; the flag (`ab`, holding
ttl_ms) also ends it should it come back without running (its worker died, or
handed it back or retried it). A job aborted while queued keeps its record
until a claim meets its entry in the ready list, and then for ttl_ms: its
entry never names a missing job (with ttl_ms 0, only a payload-less tombstone
stays until then). ]]
local function abort(keys, args)
  local prefix, id, ttl = keys[1], args[1], tonumber(args[2])
  if not ttl then return redis.error_reply('ERR abort: malformed ttl') end
  local jkey = prefix .. 'j:' .. id
  local f = read_job(prefix, jkey, {'s', 'wt', 'a', 'd'})
  local status = f and f[1]
  if status == 'queued' or status == 'scheduled' then
    local waiters, now = f[2], now_ms()
    redis.call('HSET', jkey, 's', 'aborted', 'et', now)
    emit(prefix, 'aborted', id, EVENTS_MAX > 0 and task_of(f[4]) or '', f[3] or 0, now)
    kcall(prefix, 'HINCRBY', prefix .. 'stats', 'aborted', 1)
    notify(prefix, id, jkey, 'aborted', '', waiters)
    if waiters then redis.call('HDEL', jkey, 'wt') end
    if status == 'scheduled' then
      kcall(prefix, 'ZREM', prefix .. 'sched', id)
      expire_record(jkey, ttl)
    elseif ttl == 0 then
      -- as for results, 0 keeps no record; but the id is still in the ready list:
      -- a bare tombstone stays for claim to delete with it, rather than an O(N) LREM
      redis.call('DEL', jkey)
      redis.call('HSET', jkey, 's', 'aborted')
    else
      redis.call('HSET', jkey, 'ab', ttl)
    end
  elseif status == 'active' then
    redis.call('HSET', jkey, 'ab', ttl)
    redis.call('PUBLISH', prefix .. 'abort', id)
  end
  return status
end

--[[ watch(prefix; client, id ...)
Registers the client as waiting for each job unless it has already ended:
one `wt:<client>` field and the `wt` count, so a watch costs the same however
many clients wait. Returns {status, blob} per id; status 'missing' when no
such job is stored (or it does not parse: it was set aside). ]]
local function watch(keys, args)
  local prefix, client = keys[1], args[1]
  local field = 'wt:' .. client
  local out = {}
  for i = 2, #args do
    local jkey = prefix .. 'j:' .. args[i]
    local held = read_job(prefix, jkey, {'s', 'r', 'e', 'wt'})
    local status = held and held[1]
    local blob = ''
    if not status then
      status = 'missing'
    elseif status == 'complete' then
      blob = held[2] or ''
    elseif status == 'failed' or status == 'aborted' then
      blob = held[3] or ''
    elseif redis.call('HSETNX', jkey, field, 1) == 1 then
      local count = tonumber(held[4])
      if held[4] and not count then
        -- the space-separated list an earlier version kept: one field each now
        count = 0
        for cid in string.gmatch(held[4], '%S+') do
          count = count + redis.call('HSETNX', jkey, 'wt:' .. cid, 1)
        end
      end
      redis.call('HSET', jkey, 'wt', (count or 0) + 1)
    end
    out[#out + 1] = status
    out[#out + 1] = blob
  end
  return out
end

--[[ unwatch(prefix; client, id ...)
The client stopped waiting (timed out, or closed): forget it. Returns 1 per id
it was registered for, else 0. ]]
local function unwatch(keys, args)
  local prefix, field = keys[1], 'wt:' .. args[1]
  local out = {}
  for i = 2, #args do
    local jkey = prefix .. 'j:' .. args[i]
    local held = job_fields(prefix, jkey, field, 'wt')
    if held[1] then
      redis.call('HDEL', jkey, field)
      local left = (tonumber(held[2]) or 1) - 1
      if left > 0 then redis.call('HSET', jkey, 'wt', left) else redis.call('HDEL', jkey, 'wt') end
      out[#out + 1] = 1
    else
      out[#out + 1] = 0
    end
  end
  return out
end

--[[ quarantine(prefix; id, token, reason)
Moves a job whose payload cannot be read aside, its raw fields kept under
`garbage:j:<id>:<ms>`, so that it neither blocks the queue nor is lost. ]]
local function quarantine(keys, args)
  local prefix, id, token, reason = keys[1], args[1], args[2], args[3]
  local jkey = prefix .. 'j:' .. id
  if token ~= '' and job_fields(prefix, jkey, 'k')[1] ~= token then return 0 end
  kcall(prefix, 'ZREM', prefix .. 'active', id)
  if redis.call('EXISTS', jkey) == 1 then set_aside(prefix, jkey, reason) end
  return 1
end

--[[ requeue(prefix; id ...) puts dead-lettered jobs back in the ready list, as
if new: no attempt and no lost delivery counted, no error, no abort flag. ]]
local function requeue(keys, args)
  local prefix = keys[1]
  local dead = prefix .. 'dead'
  local n = 0
  local now = now_ms()
  for _, id in ipairs(args) do
    local jkey = prefix .. 'j:' .. id
    local f, why = read_job(prefix, jkey, {'s', 'd'})
    -- a job in another state keeps its entry: requeueing it would run it twice
    if (f and f[1] == 'failed') or why then
      if kcall(prefix, 'ZREM', dead, id) == 1 then
        if f then
          redis.call('HSET', jkey, 's', 'queued', 'a', 0, 'due', now)
          redis.call('HDEL', jkey, 'l', 'e', 'et', 'st', 'ab', 'k', 'w')
          kcall(prefix, 'LPUSH', prefix .. 'ready', id)
          emit(prefix, 'enqueued', id, EVENTS_MAX > 0 and task_of(f[2]) or '', 0, now)
          n = n + 1
        elseif why == 'missing' then
          stray(prefix, 'dead', id, 'dead entry names no job')
        end
      end
    end
  end
  if n > 0 then signal(prefix) end
  return n
end

--[[ purge(prefix; id ...) deletes dead-lettered jobs (only failed ones: an id
planted in the dead set does not delete a live job). ]]
local function purge(keys, args)
  local prefix = keys[1]
  local n = 0
  for _, id in ipairs(args) do
    local jkey = prefix .. 'j:' .. id
    local f, why = read_job(prefix, jkey, {'s'})
    if (f and f[1] == 'failed') or why then
      if kcall(prefix, 'ZREM', prefix .. 'dead', id) == 1 then
        if f then redis.call('DEL', jkey) end
        n = n + 1
      end
    end
  end
  return n
end

-- Every Function's first argument is the event stream's cap (EVENTS_MAX), taken
-- off before the Function sees its own: checked first, it fails nothing half way.
local function register(name, fn, flags)
  redis.register_function{
    function_name = 'aq___VERSION___' .. name,
    callback = function(keys, args)
      local raw = table.remove(args, 1)
      if not raw or #raw > 12 or not string.find(raw, '^%d+$') then
        return redis.error_reply('ERR ' .. name .. ': malformed event stream length')
      end
      EVENTS_MAX, EVENTS_ARG, now_n = tonumber(raw), raw, nil
      return fn(keys, args)
    end,
    flags = flags or {},
  }
end

-- When Redis is out of memory (maxmemory, noeviction) new work is refused:
-- enqueue and requeue fail fast with OOM. Everything that finishes or frees
-- work already accepted must still go through, or running jobs could neither
-- be acknowledged nor drain the queue: those functions are `allow-oom`.
local DRAIN = {'allow-oom'}

register('enqueue', enqueue)
register('requeue', requeue)
register('cron_fire', cron_fire)
register('cron_define', cron_define)
register('claim', claim, DRAIN)
register('finish', finish, DRAIN)
register('heartbeat', heartbeat, DRAIN)
register('deregister', deregister, DRAIN)
register('abort', abort, DRAIN)
register('watch', watch, DRAIN)
register('unwatch', unwatch, DRAIN)
register('quarantine', quarantine, DRAIN)
register('purge', purge, DRAIN)
