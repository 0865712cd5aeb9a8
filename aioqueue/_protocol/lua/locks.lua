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
  local held = job_fields(prefix, prefix .. KEY.job .. hid, 's', 'k')
  if held[1] ~= ST.active or held[2] ~= htoken then return false end
  local deadline = kcall(prefix, 'ZSCORE', prefix .. KEY.active, hid)
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
  local lkey = prefix .. KEY.lock .. name
  local live, holder, deadline = lock_live(prefix, lock_value(prefix, lkey), now)
  if not live or holder == id then
    redis.call('SET', lkey, id .. ' ' .. token)
    kcall(prefix, 'ZREM', prefix .. KEY.lockq .. name, id)
    return true
  end
  if string.sub(u, 1, 1) == 'd' then
    local blob = cmsgpack.pack({'aioqueue.LockHeld', 'lock ' .. name .. ' held by job ' .. holder,
      '', false, CODE.lock_held})
    local waiters = redis.call('HGET', jkey, 'wt')
    redis.call('HSET', jkey, 's', ST.aborted, 'e', blob, 'et', now)
    kcall(prefix, 'HINCRBY', prefix .. KEY.stats, 'dropped', 1)
    notify(prefix, id, jkey, ST.aborted, blob, waiters)
    if waiters then redis.call('HDEL', jkey, 'wt') end
    redis.call('PEXPIRE', jkey, DROPPED_TTL_MS)
    emit(prefix, EV.aborted, id, task, attempt, now)
  else
    -- parked, not polled: finish wakes the oldest waiter; the due time is the
    -- safety net for a holder that dies (its lock lapses with its lease)
    kcall(prefix, 'ZADD', prefix .. KEY.lockq .. name, 'NX', now, id)
    local due = math.max(deadline or lease_end, now) + LOCK_RECHECK_MS
    schedule(prefix, id, jkey, due)
    emit(prefix, EV.scheduled, id, task, attempt, now, 'due', int_s(due))
  end
  return false
end

-- Releases the lock if this delivery holds it and hands it to the oldest waiter.
local function release_lock(prefix, id, token, u)
  local name = string.sub(u, 2)
  local lkey = prefix .. KEY.lock .. name
  if lock_value(prefix, lkey) ~= id .. ' ' .. token then return end
  redis.call('DEL', lkey)
  local lockq = prefix .. KEY.lockq .. name
  for _ = 1, 100 do
    local first = kcall(prefix, 'ZPOPMIN', lockq)
    local wid = first[1]
    if not wid then return end
    local wkey = prefix .. KEY.job .. wid
    local status = nil
    if valid_id(wid) then
      status = job_fields(prefix, wkey, 's')[1]
    else
      stray(prefix, KEY.lockq .. name, wid, 'lock queue entry is not a job id')
    end
    -- a waiter aborted, or whose record expired since, is just passed over
    if status == ST.queued then return end -- already on its way to a worker
    if status == ST.scheduled then
      kcall(prefix, 'ZREM', prefix .. KEY.sched, wid)
      redis.call('HSET', wkey, 's', ST.queued)
      kcall(prefix, 'RPUSH', prefix .. KEY.ready, wid)
      signal(prefix)
      return
    end
  end
end
