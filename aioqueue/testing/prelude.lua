--[[
aioqueue.testing's clock, put in front of the production library (see _build.py).

Every `redis.call(` and `redis.pcall(` of the production source is routed
through `aqt_call` / `aqt_pcall`, which change exactly two things and pass
everything else through:

  TIME      answers the test clock (microseconds in `aq:testing:clock`, moved
            only by TestClock), or real time while that key is absent.
  TTLs      PEXPIRE/EXPIRE and SET ... PX|EX also record the key's deadline on
            the test clock in the zset `aq:testing:ttl`; the real TTL is made
            a day longer, so only the test clock ends it (aqt step deletes a
            key whose recorded deadline passed and which still has a TTL).

Every production Function is registered through `aqt_register_function`,
which makes it end with `aqt_drive()` (timeline.lua): the test clock's drive
looks at the queues after each change, in the call that made it.

The production library has none of this: it reads TIME and sets TTLs as is.
]]

local AQT_CLOCK = 'aq:testing:clock'
local AQT_TTL = 'aq:testing:ttl'
local AQT_SLACK_MS = 86400000

local function aqt_now_us()
  local v = redis.call('GET', AQT_CLOCK)
  if v then return tonumber(v) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

local function aqt_deadline(key, ms)
  redis.call('ZADD', AQT_TTL, math.floor(aqt_now_us() / 1000) + ms, key)
end

-- SET key value [...] PX ms | EX s: the same SET with a longer real TTL.
local function aqt_set(raw, args)
  for i = 3, #args - 1 do
    local opt = string.upper(args[i])
    if opt == 'PX' or opt == 'EX' then
      local ms = tonumber(args[i + 1])
      if opt == 'EX' and ms then ms = ms * 1000 end
      if ms then
        args[i] = 'PX'
        args[i + 1] = ms + AQT_SLACK_MS
        local reply = raw('SET', unpack(args))
        if type(reply) == 'table' and reply.ok then aqt_deadline(args[1], ms) end
        return reply
      end
    end
  end
  return raw('SET', unpack(args))
end

-- raw: redis.call or redis.pcall, whichever the production code called
local function aqt_route(raw, cmd, ...)
  local name = string.upper(cmd)
  if name == 'TIME' then
    local us = aqt_now_us()
    return {string.format('%d', math.floor(us / 1000000)), string.format('%d', us % 1000000)}
  end
  if (name == 'PEXPIRE' or name == 'EXPIRE') and select('#', ...) == 2 then
    local key, n = ...
    local ms = tonumber(n)
    if ms and name == 'EXPIRE' then ms = ms * 1000 end
    if ms and ms > 0 then
      local reply = raw('PEXPIRE', key, ms + AQT_SLACK_MS)
      if reply == 1 then aqt_deadline(key, ms) end
      return reply
    end
  elseif name == 'SET' then
    return aqt_set(raw, {...})
  end
  return raw(cmd, ...)
end

local function aqt_call(cmd, ...)
  return aqt_route(redis.call, cmd, ...)
end

local function aqt_pcall(cmd, ...)
  return aqt_route(redis.pcall, cmd, ...)
end

-- Set by timeline.lua, after the production source: the test clock's drive.
local aqt_drive

-- What the production source's redis.register_function{...} is routed to.
local function aqt_register_function(spec)
  local flags = spec.flags or {}
  for i = 1, #flags do -- (ipairs is not there while a library loads)
    if flags[i] == 'no-writes' then return redis.register_function(spec) end
  end
  local fn = spec.callback
  spec.callback = function(keys, args)
    local reply = fn(keys, args)
    aqt_drive()
    return reply
  end
  return redis.register_function(spec)
end
