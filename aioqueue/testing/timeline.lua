--[[
Functions of aioqueue.testing's build only, after the production library.
KEYS are the key prefixes (`aq:{queue}:`) of the queues that live workers serve.
]]

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

--[[ aqt_step(prefixes; now_ms, target_ms, tick_ms)
Moves the test clock to the earliest of: the next thing due in Redis, the
cron tick tick_ms (-1: none), target_ms. Keys whose test-clock TTL has passed
are deleted; queues with due work get a wake signal. Returns {the new time,
1 when a queue was woken}. ]]
local function aqt_step(keys, args)
  local now, t, tick = tonumber(args[1]), tonumber(args[2]), tonumber(args[3])
  local due_at = aqt_next_due(keys, now)
  if due_at >= 0 and due_at < t then t = due_at end
  if tick >= 0 and tick < t then t = tick end
  if t < now then t = now end
  redis.call('SET', AQT_CLOCK, string.format('%d', t * 1000))
  local ended = redis.call('ZRANGE', AQT_TTL, '-inf', t, 'BYSCORE')
  for _, key in ipairs(ended) do
    -- PTTL -1: a later write dropped the TTL; -2: gone already
    if redis.call('PTTL', key) >= 0 then redis.call('DEL', key) end
  end
  if #ended > 0 then redis.call('ZREMRANGEBYSCORE', AQT_TTL, '-inf', t) end
  local woke = 0
  for _, prefix in ipairs(keys) do
    local due = redis.call('LLEN', prefix .. 'ready') > 0
    for _, name in ipairs({'sched', 'active'}) do
      if #redis.call('ZRANGE', prefix .. name, '-inf', t, 'BYSCORE', 'LIMIT', 0, 1) > 0 then
        due = true
      end
    end
    if due then
      woke = 1
      if redis.call('LLEN', prefix .. 'wake') == 0 then
        redis.call('RPUSH', prefix .. 'wake', '1')
      end
    end
  end
  return {string.format('%d', t), woke}
end

-- aqt_idle(prefixes; now_ms, live worker id ...): {why not idle ('' when idle),
-- then the dead-letter count of each queue}. Busy: a ready job, a delayed job or
-- lease deadline that is due, or a delivery held by one of the live workers.
local function aqt_idle(keys, args)
  local now = tonumber(args[1])
  local live = {}
  for i = 2, #args do live[args[i]] = true end
  local why = ''
  local dead = {}
  for _, prefix in ipairs(keys) do
    dead[#dead + 1] = redis.call('ZCARD', prefix .. 'dead')
    if why == '' then
      if redis.call('LLEN', prefix .. 'ready') > 0 then
        why = 'ready jobs in ' .. prefix
      elseif #redis.call('ZRANGE', prefix .. 'sched', '-inf', now, 'BYSCORE', 'LIMIT', 0, 1) > 0
      then
        why = 'due delayed jobs in ' .. prefix
      else
        for _, id in ipairs(redis.call('ZRANGE', prefix .. 'active', 0, -1)) do
          local w = redis.pcall('HGET', prefix .. 'j:' .. id, 'w')
          if type(w) == 'string' and live[w] then
            why = 'job ' .. id .. ' running in ' .. prefix
            break
          end
        end
        if why == '' and #redis.call('ZRANGE', prefix .. 'active', '-inf', now, 'BYSCORE',
            'LIMIT', 0, 1) > 0 then
          why = 'expired leases in ' .. prefix
        end
      end
    end
  end
  local out = {why}
  for _, n in ipairs(dead) do out[#out + 1] = n end
  return out
end

redis.register_function{function_name = 'aqt___VERSION___step', callback = aqt_step}
redis.register_function{function_name = 'aqt___VERSION___idle', callback = aqt_idle,
  flags = {'no-writes'}}
