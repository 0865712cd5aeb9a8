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
  local workers, winfo = prefix .. KEY.workers, prefix .. KEY.winfo
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
    local jkey = prefix .. KEY.job .. id
    local held = job_fields(prefix, jkey, 's', 'k', 'ab')
    if held[1] ~= ST.active or held[2] ~= token then
      stop[#stop + 1] = token
      stop[#stop + 1] = 'lost'
    elseif held[3] then
      stop[#stop + 1] = token
      stop[#stop + 1] = 'abort'
    else
      kcall(prefix, 'ZADD', prefix .. KEY.active, 'XX', now + lease, id)
    end
  end
  -- jobs it made ready must wake an idle worker, not wait for its next look
  local promoted, reaped = promote_and_reap(prefix, now, 100)
  if promoted + reaped > 0 then signal(prefix) end
  return stop
end

--[[ deregister(prefix; worker) ]]
local function deregister(keys, args)
  kcall(keys[1], 'ZREM', keys[1] .. KEY.workers, args[1])
  kcall(keys[1], 'HDEL', keys[1] .. KEY.winfo, args[1])
  return 1
end

--[[ library_beat(prefix; worker, leaving)
Here the prefix is a library version's own (`aq:library:{<version>}:`, keys.py's
library_prefix), not a queue's: its `workers` set holds the workers that run
that version, by their last beat (ms), so that a worker starting can tell the
old versions nobody runs any more from those still in use (library_users).
leaving '1': the worker stops (deregister). ]]
local function library_beat(keys, args)
  local prefix, worker, leaving = keys[1], args[1], args[2]
  if not worker then return redis.error_reply('ERR library_beat: malformed arguments') end
  local workers = prefix .. KEY.workers
  if leaving == '1' then
    kcall(prefix, 'ZREM', workers, worker)
  else
    kcall(prefix, 'ZADD', workers, now_ms(), worker)
  end
  return 1
end

--[[ library_users(prefix; ttl_ms)
How many workers of the library version whose prefix this is beat within
ttl_ms; those that did not are forgotten. ]]
local function library_users(keys, args)
  local prefix, ttl = keys[1], tonumber(args[1])
  if not ttl then return redis.error_reply('ERR library_users: malformed ttl') end
  local workers = prefix .. KEY.workers
  kcall(prefix, 'ZREMRANGEBYSCORE', workers, '-inf', '(' .. (now_ms() - ttl))
  return kcall(prefix, 'ZCARD', workers)
end
