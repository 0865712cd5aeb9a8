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
  local jkey = prefix .. KEY.job .. id
  local f = read_job(prefix, jkey, {'s', 'wt', 'a', 'd'})
  local status = f and f[1]
  if status == ST.queued or status == ST.scheduled then
    local waiters, now = f[2], now_ms()
    redis.call('HSET', jkey, 's', ST.aborted, 'et', now)
    emit(prefix, EV.aborted, id, EVENTS_MAX > 0 and task_of(f[4]) or '', f[3] or 0, now)
    kcall(prefix, 'HINCRBY', prefix .. KEY.stats, ST.aborted, 1)
    notify(prefix, id, jkey, ST.aborted, '', waiters)
    if waiters then redis.call('HDEL', jkey, 'wt') end
    if status == ST.scheduled then
      kcall(prefix, 'ZREM', prefix .. KEY.sched, id)
      expire_record(jkey, ttl)
    elseif ttl == 0 then
      -- as for results, 0 keeps no record; but the id is still in the ready list:
      -- a bare tombstone stays for claim to delete with it, rather than an O(N) LREM
      redis.call('DEL', jkey)
      redis.call('HSET', jkey, 's', ST.aborted)
    else
      redis.call('HSET', jkey, 'ab', ttl)
    end
  elseif status == ST.active then
    redis.call('HSET', jkey, 'ab', ttl)
    redis.call('PUBLISH', prefix .. KEY.abort, id)
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
    local jkey = prefix .. KEY.job .. args[i]
    local held = read_job(prefix, jkey, {'s', 'r', 'e', 'wt'})
    local status = held and held[1]
    local blob = ''
    if not status then
      status = 'missing'
    elseif status == ST.complete then
      blob = held[2] or ''
    elseif status == ST.failed or status == ST.aborted then
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
    local jkey = prefix .. KEY.job .. args[i]
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
  local jkey = prefix .. KEY.job .. id
  if token ~= '' and job_fields(prefix, jkey, 'k')[1] ~= token then return 0 end
  kcall(prefix, 'ZREM', prefix .. KEY.active, id)
  if redis.call('EXISTS', jkey) == 1 then set_aside(prefix, jkey, reason) end
  return 1
end

--[[ requeue(prefix; id ...) puts dead-lettered jobs back in the ready list, as
if new: no attempt and no lost delivery counted, no error, no abort flag. ]]
local function requeue(keys, args)
  local prefix = keys[1]
  local dead = prefix .. KEY.dead
  local n = 0
  local now = now_ms()
  for _, id in ipairs(args) do
    local jkey = prefix .. KEY.job .. id
    local f, why = read_job(prefix, jkey, {'s', 'd'})
    -- a job in another state keeps its entry: requeueing it would run it twice
    if (f and f[1] == ST.failed) or why then
      if kcall(prefix, 'ZREM', dead, id) == 1 then
        if f then
          redis.call('HSET', jkey, 's', ST.queued, 'a', 0, 'due', now)
          redis.call('HDEL', jkey, 'l', 'e', 'et', 'st', 'ab', 'k', 'w')
          kcall(prefix, 'LPUSH', prefix .. KEY.ready, id)
          emit(prefix, EV.enqueued, id, EVENTS_MAX > 0 and task_of(f[2]) or '', 0, now)
          n = n + 1
        elseif why == 'missing' then
          stray(prefix, KEY.dead, id, 'dead entry names no job')
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
    local jkey = prefix .. KEY.job .. id
    local f, why = read_job(prefix, jkey, {'s'})
    if (f and f[1] == ST.failed) or why then
      if kcall(prefix, 'ZREM', prefix .. KEY.dead, id) == 1 then
        if f then redis.call('DEL', jkey) end
        n = n + 1
      end
    end
  end
  return n
end
