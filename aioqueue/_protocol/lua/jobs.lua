-- Runs a variadic command over a long list in chunks (Lua's stack is bounded).
local function bulk(prefix, cmd, key, items)
  for i = 1, #items, 2000 do
    kcall(prefix, cmd, key, unpack(items, i, math.min(i + 1999, #items)))
  end
end

-- One element in the wake list means "there may be work": idle workers block on it.
local function signal(prefix)
  local wake = prefix .. KEY.wake
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
      redis.call('SPUBLISH', prefix .. KEY.client .. string.sub(cid, 3), msg)
    else
      redis.call('PUBLISH', CLIENT_CHANNEL .. cid, msg)
    end
  end
end

local function schedule(prefix, id, jkey, due)
  local sched = prefix .. KEY.sched
  local first = kcall(prefix, 'ZRANGE', sched, 0, 0, 'WITHSCORES')
  kcall(prefix, 'ZADD', sched, due, id)
  redis.call('HSET', jkey, 's', ST.scheduled, 'due', due)
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
    '', false, CODE.aborted})
  local waiters = redis.call('HGET', jkey, 'wt')
  redis.call('HSET', jkey, 's', ST.aborted, 'e', blob, 'et', now)
  redis.call('HDEL', jkey, 'ab', 'wt')
  kcall(prefix, 'HINCRBY', prefix .. KEY.stats, ST.aborted, 1)
  notify(prefix, id, jkey, ST.aborted, blob, waiters)
  expire_record(jkey, tonumber(ab))
  emit(prefix, EV.aborted, id, task, attempt, now, ...)
end

-- Move due scheduled jobs and expired leases to the front of the ready list,
-- a bounded number per call so that a huge backlog never blocks Redis.
-- Returns how many due jobs and how many expired leases it moved.
local REAP_FIELDS = {'s', 'l', 'ab', 'a', 'w', 'd'}
local function promote_and_reap(prefix, now, limit)
  -- removals and pushes go in one call each: per id only the job hash is touched
  local ready = prefix .. KEY.ready
  local moved = {}
  local sched = prefix .. KEY.sched
  local promoted, reaped = 0, 0
  local due = kcall(prefix, 'ZRANGE', sched, '-inf', now, 'BYSCORE', 'LIMIT', 0, limit)
  if #due > 0 then
    bulk(prefix, 'ZREM', sched, due)
    for _, id in ipairs(due) do
      local f = entry_job(prefix, KEY.sched, id, {'s'})
      if f and f[1] == ST.scheduled then
        redis.call('HSET', prefix .. KEY.job .. id, 's', ST.queued)
        moved[#moved + 1] = id
        promoted = promoted + 1
      end
    end
  end
  local active = prefix .. KEY.active
  local expired = kcall(prefix, 'ZRANGE', active, '-inf', now, 'BYSCORE', 'LIMIT', 0, limit)
  if #expired > 0 then
    bulk(prefix, 'ZREM', active, expired)
    for _, id in ipairs(expired) do
      local jkey = prefix .. KEY.job .. id
      local f = entry_job(prefix, KEY.active, id, REAP_FIELDS)
      if f and f[1] == ST.active then
        local task = EVENTS_MAX > 0 and task_of(f[6]) or ''
        if f[3] then
          abort_now(prefix, id, jkey, f[3], now, task, f[4], 'worker', f[5] or '')
        else
          -- `due`: when it became ready again, what a claim's wait_ms counts from
          redis.call('HSET', jkey, 's', ST.queued, 'due', now)
          redis.call('HDEL', jkey, 'k', 'w')
          redis.call('HINCRBY', jkey, 'l', 1)
          moved[#moved + 1] = id
          emit(prefix, EV.reclaimed, id, task, f[4] or 0, now, 'worker', f[5] or '')
        end
        reaped = reaped + 1
      end
    end
    if reaped > 0 then kcall(prefix, 'HINCRBY', prefix .. KEY.stats, 'reaped', reaped) end
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
  for _, name in ipairs({KEY.sched, KEY.active}) do
    local first = kcall(prefix, 'ZRANGE', prefix .. name, 0, 0, 'WITHSCORES')
    if first[2] ~= nil then
      local wait = math.max(0, tonumber(first[2]) * 1000 - now_us)
      if best < 0 or wait < best then best = wait end
    end
  end
  return best
end
