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
