--[[
Functions of aioqueue.testing's build only, after the production library.

The test clock is driven inside Redis. While a test waits in `clock.advance`
or `drain`, `aq:testing:drive` holds what it waits for (the key prefixes
`aq:{queue}:` of the live workers' queues, their worker ids, the target time,
the next cron tick of a live worker, fail_fast and the dead-letter counts it
started from). Every production Function of this build ends with `aqt_drive`
(prelude.lua), so the call that leaves the queues idle (a worker's `finish`,
mostly) is also the one that moves the clock to the next thing due in the
window and wakes the workers for it: one step costs the test no round trip,
and none is missed, because every change of a queue is one of those calls.
The drive stops, and pushes why onto `aq:testing:settled` for the test to pop,
when the target is reached and the queues are idle ('done'), at a cron tick
('cron': the test's cron runners fire it, through `cron_fire`, then the drive
goes on), or when a job was dead-lettered under fail_fast ('dead').
]]

local AQT_DRIVE = 'aq:testing:drive'
local AQT_SETTLED = 'aq:testing:settled'
local AQT_SCAN = 16 -- active entries read per ZRANGE while looking for a live holder

local function aqt_now_ms()
  return math.floor(aqt_now_us() / 1000)
end

-- The earliest time after now when something in Redis comes due: a delayed
-- job, a lease deadline, a TTL; -1 when nothing will.
local function aqt_next_due(prefixes, now)
  local best = -1
  local function consider(key)
    local first = redis.call('ZRANGE', key, string.format('(%d', now), '+inf', 'BYSCORE',
      'LIMIT', 0, 1, 'WITHSCORES')
    if first[2] then
      local at = tonumber(first[2])
      if best < 0 or at < best then best = at end
    end
  end
  for _, prefix in ipairs(prefixes) do
    consider(prefix .. 'sched')
    consider(prefix .. 'active')
  end
  consider(AQT_TTL)
  return best
end

local function aqt_any_due(key, now)
  return #redis.call('ZRANGE', key, '-inf', now, 'BYSCORE', 'LIMIT', 0, 1) > 0
end

-- Why the queues are not idle at `now` ('' when they are): a ready job, a
-- delayed job or lease deadline that is due, or a delivery held by a live
-- worker (an outcome not yet written still holds its delivery).
local function aqt_busy(prefixes, live, now)
  for _, prefix in ipairs(prefixes) do
    if redis.call('LLEN', prefix .. 'ready') > 0 or redis.call('LLEN', prefix .. 'cpu') > 0 then
      return 'ready jobs in ' .. prefix
    end
    if aqt_any_due(prefix .. 'sched', now) then return 'due delayed jobs in ' .. prefix end
    local active = prefix .. 'active'
    local from = 0
    while true do
      local ids = redis.call('ZRANGE', active, from, from + AQT_SCAN - 1)
      for _, id in ipairs(ids) do
        local w = redis.pcall('HGET', prefix .. 'j:' .. id, 'w')
        if type(w) == 'string' and live[w] then
          return 'job ' .. id .. ' running in ' .. prefix
        end
      end
      if #ids < AQT_SCAN then break end
      from = from + AQT_SCAN
    end
    if aqt_any_due(active, now) then return 'expired leases in ' .. prefix end
  end
  return ''
end

-- Moves the clock to t: keys whose test-clock TTL has passed are deleted, and
-- queues with due work get a wake signal. True when a queue was woken.
local function aqt_move(prefixes, t)
  redis.call('SET', AQT_CLOCK, string.format('%d', t * 1000))
  local ended = redis.call('ZRANGE', AQT_TTL, '-inf', t, 'BYSCORE')
  for _, key in ipairs(ended) do
    -- PTTL -1: a later write dropped the TTL; -2: gone already
    if redis.call('PTTL', key) >= 0 then redis.call('DEL', key) end
  end
  if #ended > 0 then redis.call('ZREMRANGEBYSCORE', AQT_TTL, '-inf', t) end
  local woke = false
  for _, prefix in ipairs(prefixes) do
    if redis.call('LLEN', prefix .. 'ready') > 0 or aqt_any_due(prefix .. 'sched', t)
        or aqt_any_due(prefix .. 'active', t) then
      woke = true
      if redis.call('LLEN', prefix .. 'wake') == 0 then
        redis.call('RPUSH', prefix .. 'wake', '1')
      end
    end
  end
  return woke
end

-- One look of the drive: false while the queues are busy, else why it stops.
local function aqt_advance(st)
  local target, tick_at = tonumber(st.t), tonumber(st.c)
  local live = {}
  for _, id in ipairs(st.w) do live[id] = true end
  while true do
    local now = aqt_now_ms()
    if st.f then
      for i, prefix in ipairs(st.p) do
        if redis.call('ZCARD', prefix .. 'dead') ~= st.d[i] then return 'dead' end
      end
    end
    if aqt_busy(st.p, live, now) ~= '' then return false end
    if now >= target then return 'done' end
    local t = target
    local due = aqt_next_due(st.p, now)
    if due >= 0 and due < t then t = due end
    local tick = tick_at >= 0 and tick_at <= t
    if tick then t = math.max(tick_at, now) end
    local woke = aqt_move(st.p, t)
    if tick then return 'cron' end
    if woke then return false end
  end
end

-- Called at the end of every production Function of this build (prelude.lua).
aqt_drive = function()
  local raw = redis.call('GET', AQT_DRIVE)
  if not raw then return end
  local why = aqt_advance(cjson.decode(raw))
  if why then
    redis.call('DEL', AQT_DRIVE)
    redis.call('RPUSH', AQT_SETTLED, why .. ':' .. aqt_now_ms())
  end
end

--[[ aqt_run(prefixes; target_ms, tick_ms, fail_fast, n, worker id * n, dead count * #prefixes)
Starts (or, after a cron tick, resumes) a drive towards target_ms (-1: the
clock's time now, a drain); tick_ms is the next cron tick of a live worker
(-1: none). Returns why it stopped at once ('done:<ms>', 'cron:<ms>',
'dead:<ms>') or 'busy:<ms>': then the call that ends the drive pushes why
onto aq:testing:settled. ]]
local function aqt_run(keys, args)
  local n = tonumber(args[4])
  -- times as strings: cjson writes numbers with 14 significant digits
  local st = {p = keys, t = args[1], c = args[2], f = args[3] == '1', w = {}, d = {}}
  if tonumber(st.t) < 0 then st.t = string.format('%d', aqt_now_ms()) end -- a drain: now
  for i = 1, n do st.w[i] = args[4 + i] end
  for i = 1, #keys do st.d[i] = tonumber(args[4 + n + i]) end
  redis.call('DEL', AQT_SETTLED)
  local why = aqt_advance(st)
  if why then
    redis.call('DEL', AQT_DRIVE)
    return why .. ':' .. aqt_now_ms()
  end
  redis.call('SET', AQT_DRIVE, cjson.encode(st))
  return 'busy:' .. aqt_now_ms()
end

--[[ aqt_stop(): ends a drive (the test stopped waiting); returns the test
clock's time. ]]
local function aqt_stop()
  redis.call('DEL', AQT_DRIVE, AQT_SETTLED)
  return aqt_now_ms()
end

-- aqt_idle(prefixes; live worker id ...): {why not idle ('' when idle), then
-- the dead-letter count of each queue, then the test clock's time}.
local function aqt_idle(keys, args)
  local live = {}
  for i = 1, #args do live[args[i]] = true end
  local now = aqt_now_ms()
  local out = {aqt_busy(keys, live, now)}
  for _, prefix in ipairs(keys) do out[#out + 1] = redis.call('ZCARD', prefix .. 'dead') end
  out[#out + 1] = now
  return out
end

redis.register_function{function_name = 'aqt___VERSION___run', callback = aqt_run}
redis.register_function{function_name = 'aqt___VERSION___stop', callback = aqt_stop}
redis.register_function{function_name = 'aqt___VERSION___idle', callback = aqt_idle,
  flags = {'no-writes'}}
