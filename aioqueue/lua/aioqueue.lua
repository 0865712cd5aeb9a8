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
  r  result bytes, e  error bytes, ab  abort requested, wt  waiting clients
  u  lock the job must hold to run: mode ('w' wait | 'd' drop) then lock name

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

-- Moves a key that holds the wrong type aside (raw value kept) instead of
-- letting every call on the queue fail; returns true when it did.
local function set_aside(prefix, key, reason)
  local dest = prefix .. 'garbage:' .. string.sub(key, #prefix + 1) .. ':' .. now_ms()
  redis.call('RENAME', key, dest)
  redis.call('ZADD', prefix .. 'garbage', now_ms(), dest)
  redis.call('HINCRBY', prefix .. 'stats', 'quarantined', 1)
  redis.log(redis.LOG_WARNING, 'aioqueue: moved ' .. key .. ' to ' .. dest .. ': ' .. reason)
end

local EXPECTED = {ready = 'list', sched = 'zset', active = 'zset', wake = 'list', stats = 'hash'}
-- enqueue touches only these: two TYPE calls fewer on the hottest producer path
local ENQUEUE_KEYS = {ready = 'list', sched = 'zset', wake = 'list'}

-- Checked before any write, because a script that fails half way keeps its
-- earlier writes: an id popped and then an error would be a lost job.
local function guard(prefix, expected)
  for name, want in pairs(expected or EXPECTED) do
    local key = prefix .. name
    local kind = redis.call('TYPE', key)['ok']
    if kind ~= 'none' and kind ~= want then set_aside(prefix, key, 'expected a ' .. want) end
  end
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

-- Runs a variadic command over a long list in chunks (Lua's stack is bounded).
local function bulk(cmd, key, items)
  for i = 1, #items, 2000 do
    redis.call(cmd, key, unpack(items, i, math.min(i + 1999, #items)))
  end
end

-- One element in the wake list means "there may be work": idle workers block on it.
local function signal(prefix)
  local wake = prefix .. 'wake'
  if redis.call('LLEN', wake) == 0 then
    redis.call('RPUSH', wake, '1')
  end
end

-- Publishes the end of a job to the clients waiting for it (``waiters`` is
-- the job's `wt` field, read by the caller with the fields it needed anyway).
-- A client id 's:<id>' is a cluster client: its channel is sharded and lives
-- in this queue's slot, so the message stays in this shard (no bus broadcast).
local function notify(prefix, id, jkey, status, blob, waiters)
  if waiters then
    local queue = string.sub(prefix, 5, -3) -- 'aq:{' .. name .. '}:'
    local msg = queue .. '\0' .. id .. '\0' .. status .. '\0' .. (blob or '')
    for cid in string.gmatch(waiters, '%S+') do
      if string.sub(cid, 1, 2) == 's:' then
        redis.call('SPUBLISH', prefix .. 'client:' .. string.sub(cid, 3), msg)
      else
        redis.call('PUBLISH', 'aq:client:' .. cid, msg)
      end
    end
  end
end

local function schedule(prefix, id, jkey, due)
  local sched = prefix .. 'sched'
  local first = redis.call('ZRANGE', sched, 0, 0, 'WITHSCORES')
  redis.call('ZADD', sched, due, id)
  redis.call('HSET', jkey, 's', 'scheduled', 'due', due)
  -- An earlier due time than any known wakes an idle worker to shorten its wait.
  if first[2] == nil or due < tonumber(first[2]) then
    signal(prefix)
  end
end

-- Move due scheduled jobs and expired leases to the front of the ready list,
-- a bounded number per call so that a huge backlog never blocks Redis.
local function promote_and_reap(prefix, now, limit)
  -- removals and pushes go in one call each: per id only the job hash is touched
  local ready = prefix .. 'ready'
  local moved = {}
  local sched = prefix .. 'sched'
  local due = redis.call('ZRANGE', sched, '-inf', now, 'BYSCORE', 'LIMIT', 0, limit)
  if #due > 0 then
    bulk('ZREM', sched, due)
    for _, id in ipairs(due) do
      local jkey = prefix .. 'j:' .. id
      if job_fields(prefix, jkey, 's')[1] == 'scheduled' then
        redis.call('HSET', jkey, 's', 'queued')
        moved[#moved + 1] = id
      end
    end
  end
  local active = prefix .. 'active'
  local expired = redis.call('ZRANGE', active, '-inf', now, 'BYSCORE', 'LIMIT', 0, limit)
  if #expired > 0 then
    bulk('ZREM', active, expired)
    local reaped = 0
    for _, id in ipairs(expired) do
      local jkey = prefix .. 'j:' .. id
      if job_fields(prefix, jkey, 's')[1] == 'active' then
        redis.call('HSET', jkey, 's', 'queued')
        redis.call('HDEL', jkey, 'k', 'w')
        redis.call('HINCRBY', jkey, 'l', 1)
        moved[#moved + 1] = id
        reaped = reaped + 1
      end
    end
    if reaped > 0 then redis.call('HINCRBY', prefix .. 'stats', 'reaped', reaped) end
  end
  if #moved > 0 then bulk('RPUSH', ready, moved) end
  return #moved
end

-- Microseconds until the next scheduled job or lease deadline, -1 when none.
-- Not milliseconds from now_ms(): its truncation alone made waits up to 1 ms long.
local function next_event(prefix)
  local t = redis.call('TIME')
  local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local best = -1
  for _, name in ipairs({'sched', 'active'}) do
    local first = redis.call('ZRANGE', prefix .. name, 0, 0, 'WITHSCORES')
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
  local deadline = redis.call('ZSCORE', prefix .. 'active', hid)
  -- no lease yet: claimed earlier in this same claim call (leases are added last)
  if deadline == false then return true, hid, nil end
  return tonumber(deadline) >= now, hid, tonumber(deadline)
end

local function lock_value(prefix, lkey)
  local got = redis.pcall('GET', lkey)
  if type(got) == 'table' and got['err'] then
    set_aside(prefix, lkey, got['err'])
    return nil
  end
  return got
end

-- Takes the lock named in `u` for this delivery, or drops or parks the job.
-- Returns true when the job may run. lease_end: the lease of a holder claimed
-- in the same call, whose deadline is not stored yet.
local function take_lock(prefix, id, jkey, token, u, now, lease_end)
  local name = string.sub(u, 2)
  local lkey = prefix .. 'lock:' .. name
  local live, holder, deadline = lock_live(prefix, lock_value(prefix, lkey), now)
  if not live or holder == id then
    redis.call('SET', lkey, id .. ' ' .. token)
    redis.call('ZREM', prefix .. 'lockq:' .. name, id)
    return true
  end
  if string.sub(u, 1, 1) == 'd' then
    local blob = cmsgpack.pack({'aioqueue.LockHeld', 'lock ' .. name .. ' held by job ' .. holder})
    local waiters = redis.call('HGET', jkey, 'wt')
    redis.call('HSET', jkey, 's', 'aborted', 'e', blob, 'et', now)
    redis.call('HINCRBY', prefix .. 'stats', 'dropped', 1)
    notify(prefix, id, jkey, 'aborted', blob, waiters)
    if waiters then redis.call('HDEL', jkey, 'wt') end
    redis.call('PEXPIRE', jkey, DROPPED_TTL_MS)
  else
    -- parked, not polled: finish wakes the oldest waiter; the due time is the
    -- safety net for a holder that dies (its lock lapses with its lease)
    redis.call('ZADD', prefix .. 'lockq:' .. name, 'NX', now, id)
    schedule(prefix, id, jkey, math.max(deadline or lease_end, now) + LOCK_RECHECK_MS)
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
    local first = redis.call('ZPOPMIN', lockq)
    local wid = first[1]
    if not wid then return end
    local wkey = prefix .. 'j:' .. wid
    local status = job_fields(prefix, wkey, 's')[1]
    if status == 'queued' then return end -- already on its way to a worker
    if status == 'scheduled' then
      redis.call('ZREM', prefix .. 'sched', wid)
      redis.call('HSET', wkey, 's', 'queued')
      redis.call('RPUSH', prefix .. 'ready', wid)
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
  guard(prefix, ENQUEUE_KEYS)
  local max_length = tonumber(args[1])
  if max_length > 0 then
    local held = redis.call('LLEN', prefix .. 'ready') + redis.call('ZCARD', prefix .. 'sched')
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
    local existing = job_fields(prefix, jkey, 's')[1]
    if existing then
      out[#out + 1] = existing
    else
      local due = 0
      if at > 0 then due = at elseif delay > 0 then due = now + delay end
      if due > now then
        redis.call('HSET', jkey, 'd', payload, 'a', 0, 'q', now)
        schedule(prefix, id, jkey, due)
      else
        redis.call('HSET', jkey, 'd', payload, 'a', 0, 'q', now, 's', 'queued')
        pushed[#pushed + 1] = id
      end
      if args[i + 4] ~= '' then redis.call('HSET', jkey, 'u', args[i + 4]) end
      out[#out + 1] = 'new'
    end
  end
  if #pushed > 0 then
    bulk('LPUSH', prefix .. 'ready', pushed)
    signal(prefix)
  end
  return out
end

--[[ claim(prefix; n, worker, lease_ms, promote_limit)
Returns {wait_us, id1, token1, attempt1, lost1, payload1, ...}; lost counts
deliveries of the job whose worker died. wait_us is how long (in microseconds) an
idle worker may block before something (a due job, an expired lease) needs it. ]]
local function claim(keys, args)
  local prefix = keys[1]
  local n, worker, lease = tonumber(args[1]), args[2], tonumber(args[3])
  guard(prefix)
  local now = now_ms()
  promote_and_reap(prefix, now, tonumber(args[4]))
  local ready = prefix .. 'ready'
  local out = {0}
  local ids = redis.call('RPOP', ready, n)
  if ids then
    local seq = redis.call('INCR', prefix .. 'seq')
    local leases = {}
    local deadline = now + lease
    for i, id in ipairs(ids) do
      local jkey = prefix .. 'j:' .. id
      local f = job_fields(prefix, jkey, 's', 'a', 'l', 'd', 'u')
      local status = f[1]
      local token = seq .. '.' .. i
      if status == 'queued' and f[5]
          and not take_lock(prefix, id, jkey, token, f[5], now, deadline) then
        status = 'locked' -- dropped or parked by take_lock
      end
      if status == 'queued' then
        local attempt = tonumber(f[2] or 0) + 1
        redis.call('HSET', jkey, 's', 'active', 'k', token, 'w', worker, 'st', now, 'a', attempt)
        leases[#leases + 1] = deadline
        leases[#leases + 1] = id
        out[#out + 1] = id
        out[#out + 1] = token
        out[#out + 1] = attempt
        out[#out + 1] = tonumber(f[3] or 0)
        out[#out + 1] = f[4]
      elseif not status then
        -- an id without its job (deleted by hand, or garbage): note it and drop it
        redis.call('HINCRBY', prefix .. 'stats', 'orphans', 1)
      elseif status == 'aborted' and not f[4] then
        redis.call('DEL', jkey) -- the tombstone of a job aborted with result_ttl=0
      end
      -- other statuses (aborted while queued) are dropped lazily here
    end
    if #leases > 0 then bulk('ZADD', prefix .. 'active', leases) end
  end
  if redis.call('LLEN', ready) > 0 then
    signal(prefix)
  else
    redis.call('DEL', prefix .. 'wake')
  end
  out[1] = next_event(prefix)
  return out
end

-- Jobs finished per 10-second bucket (`tput:<bucket>`, kept 2 minutes), for
-- `aioqueue info`: two commands per finish call, whatever the batch size.
local TPUT_BUCKET_MS = 10000
local function count_finished(prefix, now, n)
  if n > 0 then
    local key = prefix .. 'tput:' .. math.floor(now / TPUT_BUCKET_MS)
    redis.call('INCRBY', key, n)
    redis.call('EXPIRE', key, 120)
  end
end

--[[ finish(prefix; [id, token, outcome, blob, ttl_ms, delay_ms] ...)
outcome: complete | failed | retry | release | aborted.
Returns per item 1, or 0 when the token no longer owns the job (stale). ]]
local function finish(keys, args)
  local prefix = keys[1]
  local now = now_ms()
  local out = {}
  local counts = {}
  local done = {}
  local finished = 0
  for i = 1, #args, 6 do
    local id, token, outcome, blob = args[i], args[i + 1], args[i + 2], args[i + 3]
    local ttl, delay = tonumber(args[i + 4]), tonumber(args[i + 5])
    local jkey = prefix .. 'j:' .. id
    local held = job_fields(prefix, jkey, 's', 'k', 'wt', 'u')
    if held[1] ~= 'active' or held[2] ~= token then
      counts['stale'] = (counts['stale'] or 0) + 1
      out[#out + 1] = 0
    else
      done[#done + 1] = id
      if held[4] then release_lock(prefix, id, token, held[4]) end
      -- the token `k` may stay: it only counts while the status is active
      if outcome == 'release' then
        redis.call('HINCRBY', jkey, 'a', -1)
        redis.call('HSET', jkey, 's', 'queued')
        redis.call('HDEL', jkey, 'ab')
        redis.call('RPUSH', prefix .. 'ready', id)
        signal(prefix)
      elseif outcome == 'retry' then
        redis.call('HSET', jkey, 'e', blob)
        redis.call('HDEL', jkey, 'ab')
        counts['retried'] = (counts['retried'] or 0) + 1
        if delay > 0 then
          schedule(prefix, id, jkey, now + delay)
        else
          redis.call('HSET', jkey, 's', 'queued')
          redis.call('LPUSH', prefix .. 'ready', id)
          signal(prefix)
        end
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
            redis.call('ZADD', prefix .. 'dead', now, id)
          elseif ttl > 0 then
            redis.call('PEXPIRE', jkey, ttl)
          end
        end
      end
      out[#out + 1] = 1
    end
  end
  if #done > 0 then bulk('ZREM', prefix .. 'active', done) end
  for name, n in pairs(counts) do
    redis.call('HINCRBY', prefix .. 'stats', name, n)
  end
  count_finished(prefix, now, finished)
  return out
end

--[[ heartbeat(prefix; worker, lease_ms, info, registry_ttl_ms, [id, token] ...)
Extends the leases the worker still holds; returns {id, reason, ...} for the
jobs it must stop: reason 'abort' (requested) or 'lost' (no longer its own). ]]
local function heartbeat(keys, args)
  local prefix = keys[1]
  local worker, lease, info, ttl = args[1], tonumber(args[2]), args[3], tonumber(args[4])
  local now = now_ms()
  local workers = prefix .. 'workers'
  redis.call('ZADD', workers, now, worker)
  redis.call('HSET', prefix .. 'winfo', worker, info)
  local gone = redis.call('ZRANGE', workers, '-inf', now - ttl, 'BYSCORE', 'LIMIT', 0, 100)
  for _, w in ipairs(gone) do
    redis.call('ZREM', workers, w)
    redis.call('HDEL', prefix .. 'winfo', w)
  end
  local stop = {}
  for i = 5, #args, 2 do
    local id, token = args[i], args[i + 1]
    local jkey = prefix .. 'j:' .. id
    local held = job_fields(prefix, jkey, 's', 'k', 'ab')
    if held[1] ~= 'active' or held[2] ~= token then
      stop[#stop + 1] = id
      stop[#stop + 1] = 'lost'
    elseif held[3] then
      stop[#stop + 1] = id
      stop[#stop + 1] = 'abort'
    else
      redis.call('ZADD', prefix .. 'active', 'XX', now + lease, id)
    end
  end
  -- jobs it made ready must wake an idle worker, not wait for its next look
  if promote_and_reap(prefix, now, 100) > 0 then signal(prefix) end
  return stop
end

--[[ cron_fire(prefix; name, tick_ms, id, payload, lock)
Fires one tick of the cron job `name` at most once, whichever worker asks first:
`<prefix>cron` keeps the last tick fired per name and only a later tick fires.
Returns {'fired' | 'dup' | 'overlap', now} or {'early', ms to wait}; 'overlap'
consumes the tick without a job because the lock (no_overlap) is still held. ]]
local function cron_fire(keys, args)
  local prefix = keys[1]
  local name, tick, id, payload, lock = args[1], tonumber(args[2]), args[3], args[4], args[5]
  guard(prefix)
  local now = now_ms()
  if now < tick then return {'early', tick - now} end
  local crons = prefix .. 'cron'
  local last = redis.pcall('HGET', crons, name)
  if type(last) == 'table' and last['err'] then
    set_aside(prefix, crons, last['err'])
    last = false
  end
  if last and tonumber(last) and tonumber(last) >= tick then return {'dup', now} end
  redis.call('HSET', crons, name, tick)
  if lock ~= '' then
    local lkey = prefix .. 'lock:' .. string.sub(lock, 2)
    if lock_live(prefix, lock_value(prefix, lkey), now) then
      redis.call('HINCRBY', prefix .. 'stats', 'cron_overlap', 1)
      return {'overlap', now}
    end
  end
  local jkey = prefix .. 'j:' .. id
  if job_fields(prefix, jkey, 's')[1] then return {'dup', now} end
  redis.call('HSET', jkey, 'd', payload, 'a', 0, 'q', now, 's', 'queued')
  if lock ~= '' then redis.call('HSET', jkey, 'u', lock) end
  redis.call('LPUSH', prefix .. 'ready', id)
  signal(prefix)
  return {'fired', now}
end

--[[ deregister(prefix; worker) ]]
local function deregister(keys, args)
  redis.call('ZREM', keys[1] .. 'workers', args[1])
  redis.call('HDEL', keys[1] .. 'winfo', args[1])
  return 1
end

--[[ abort(prefix; id, ttl_ms)
Returns the status before the abort: a queued or scheduled job is aborted at
once (its record kept ttl_ms; 0: deleted; negative: kept), an active one is
flagged and its workers told on the abort channel. ]]
local function abort(keys, args)
  local prefix, id, ttl = keys[1], args[1], tonumber(args[2])
  local jkey = prefix .. 'j:' .. id
  local status = job_fields(prefix, jkey, 's')[1]
  if status == 'queued' or status == 'scheduled' then
    redis.call('ZREM', prefix .. 'sched', id)
    redis.call('HSET', jkey, 's', 'aborted', 'et', now_ms())
    redis.call('HINCRBY', prefix .. 'stats', 'aborted', 1)
    local waiters = redis.call('HGET', jkey, 'wt')
    notify(prefix, id, jkey, 'aborted', '', waiters)
    if waiters then redis.call('HDEL', jkey, 'wt') end
    -- as for results: 0 keeps no record, a negative ttl keeps it until deleted
    if ttl > 0 then
      redis.call('PEXPIRE', jkey, ttl)
    elseif ttl == 0 then
      redis.call('DEL', jkey)
      -- a queued job's id is still in the ready list: a bare tombstone (no payload)
      -- stays for claim to delete when it drops the id, rather than an O(N) LREM
      if status == 'queued' then redis.call('HSET', jkey, 's', 'aborted') end
    end
  elseif status == 'active' then
    redis.call('HSET', jkey, 'ab', 1)
    redis.call('PUBLISH', prefix .. 'abort', id)
  end
  return status
end

--[[ watch(prefix; id, client)
Registers the client as waiting for the job unless it has already ended.
Returns {status, blob}; status 'missing' when no such job is stored. ]]
local function watch(keys, args)
  local prefix, id, client = keys[1], args[1], args[2]
  local jkey = prefix .. 'j:' .. id
  local held = job_fields(prefix, jkey, 's', 'r', 'e', 'wt')
  local status = held[1]
  if not status then return {'missing', ''} end
  if status == 'complete' then return {status, held[2] or ''} end
  if status == 'failed' or status == 'aborted' then return {status, held[3] or ''} end
  local waiters = held[4] or ''
  if not string.find(' ' .. waiters .. ' ', ' ' .. client .. ' ', 1, true) then
    redis.call('HSET', jkey, 'wt', waiters .. ' ' .. client)
  end
  return {status, ''}
end

--[[ quarantine(prefix; id, token, reason)
Moves a job whose payload cannot be read aside, its raw fields kept under
`garbage:j:<id>:<ms>`, so that it neither blocks the queue nor is lost. ]]
local function quarantine(keys, args)
  local prefix, id, token, reason = keys[1], args[1], args[2], args[3]
  local jkey = prefix .. 'j:' .. id
  if token ~= '' and job_fields(prefix, jkey, 'k')[1] ~= token then return 0 end
  redis.call('ZREM', prefix .. 'active', id)
  if redis.call('EXISTS', jkey) == 1 then
    redis.call('HSET', jkey, 'reason', reason)
    set_aside(prefix, jkey, reason)
  end
  return 1
end

--[[ requeue(prefix; id ...) puts dead-lettered jobs back in the ready list. ]]
local function requeue(keys, args)
  local prefix = keys[1]
  local n = 0
  for _, id in ipairs(args) do
    local jkey = prefix .. 'j:' .. id
    if redis.call('ZREM', prefix .. 'dead', id) == 1 and redis.call('EXISTS', jkey) == 1 then
      redis.call('HSET', jkey, 's', 'queued', 'a', 0)
      redis.call('HDEL', jkey, 'e', 'et')
      redis.call('LPUSH', prefix .. 'ready', id)
      n = n + 1
    end
  end
  if n > 0 then signal(prefix) end
  return n
end

--[[ purge(prefix; id ...) deletes dead-lettered jobs. ]]
local function purge(keys, args)
  local prefix = keys[1]
  local n = 0
  for _, id in ipairs(args) do
    if redis.call('ZREM', prefix .. 'dead', id) == 1 then
      redis.call('DEL', prefix .. 'j:' .. id)
      n = n + 1
    end
  end
  return n
end

local function register(name, fn, flags)
  redis.register_function{
    function_name = 'aq___VERSION___' .. name,
    callback = fn,
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
register('claim', claim, DRAIN)
register('finish', finish, DRAIN)
register('heartbeat', heartbeat, DRAIN)
register('deregister', deregister, DRAIN)
register('abort', abort, DRAIN)
register('watch', watch, DRAIN)
register('quarantine', quarantine, DRAIN)
register('purge', purge, DRAIN)
