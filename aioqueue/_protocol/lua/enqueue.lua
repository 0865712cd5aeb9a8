--[[ enqueue(prefix; max_length, [id, payload, delay_ms, at_ms, lock] ...)
Returns per job: 'new' or the status of the job that already has this id.
lock: '' or the job's `u` field (mode letter then lock name).
With max_length > 0 the whole batch is refused (error QUEUEFULL) when the
queued and scheduled jobs plus the batch would exceed it. ]]
local function enqueue(keys, args)
  local prefix = keys[1]
  local max_length = tonumber(args[1])
  local jprefix = prefix .. KEY.job
  -- per job j: its key and numbers, read once here, where a malformed job fails
  -- the call before anything is written
  local jkeys, delays, ats, seen, repeated = {}, {}, {}, {}, false
  for i = 2, #args, 5 do
    local delay, at = num_arg(args[i + 2], nil), num_arg(args[i + 3], nil)
    if not (delay and at and args[i + 4]) then
      return redis.error_reply('ERR enqueue: malformed job ' .. tostring(args[i]))
    end
    local id, j = args[i], #jkeys + 1
    if seen[id] then repeated = true end
    seen[id] = true
    jkeys[j], delays[j], ats[j] = jprefix .. id, delay, at
  end
  if not max_length then return redis.error_reply('ERR enqueue: malformed max_length') end
  if max_length > 0 then
    local held = kcall(prefix, 'LLEN', prefix .. KEY.ready)
      + kcall(prefix, 'ZCARD', prefix .. KEY.sched)
      + kcall(prefix, 'LLEN', prefix .. KEY.cpu) -- CPU-bound jobs a claim moved aside
    if held + #jkeys > max_length then
      return redis.error_reply("QUEUEFULL queue '" .. string.sub(prefix, 5, -3) .. "' holds "
        .. held .. ' jobs; its limit is ' .. max_length)
    end
  end
  -- one EXISTS of every id answers "are they all free", the hottest case; an id
  -- taken (or twice in the batch) has each job looked at on its own
  local check = repeated
  for c = 1, #jkeys, 2000 do
    if check then break end
    check = redis.call('EXISTS', unpack(jkeys, c, math.min(c + 1999, #jkeys))) > 0
  end
  -- the layout this queue's keys are stored in, for workers of later releases
  kcall(prefix, 'HSETNX', prefix .. KEY.meta, 'layout', LAYOUT)
  local now = now_ms()
  -- numbers as strings made once: Redis 7.0 formats a Lua number argument with '%.17g'
  local now_str = string.format('%d', now)
  local out = {}
  local pushed = {}
  for j = 1, #jkeys do
    local i = j * 5 - 3
    local id, payload, jkey = args[i], args[i + 1], jkeys[j]
    local existing = nil
    if check and redis.call('EXISTS', jkey) == 1 then
      local kind = redis.call('TYPE', jkey)['ok']
      if kind == 'hash' then
        local f = read_job(prefix, jkey, {'s'}) -- a hash that is no job is set aside
        existing = f and f[1]
      else
        set_aside(prefix, jkey, 'a ' .. kind .. ' where a job hash belongs')
      end
    end
    if existing then
      out[j] = existing
    else
      local due, at, delay = 0, ats[j], delays[j]
      if at > 0 then due = at elseif delay > 0 then due = now + delay end
      local lock = args[i + 4]
      local task = EVENTS_MAX > 0 and task_of(payload) or ''
      if due > now then
        redis.call('HSET', jkey, 'd', payload, 'a', '0', 'q', now_str)
        schedule(prefix, id, jkey, due)
        emit(prefix, EV.scheduled, id, task, 0, now, 'due', int_s(due))
      else
        redis.call('HSET', jkey, 'd', payload, 'a', '0', 'q', now_str, 's', ST.queued)
        pushed[#pushed + 1] = id
        emit(prefix, EV.enqueued, id, task, 0, now)
      end
      if lock ~= '' then redis.call('HSET', jkey, 'u', lock) end
      out[j] = 'new'
    end
  end
  if #pushed > 0 then
    bulk(prefix, 'LPUSH', prefix .. KEY.ready, pushed)
    signal(prefix)
  end
  return out
end
