--[[ enqueue(prefix; max_length, [id, payload, delay_ms, at_ms, lock] ...)
Returns per job: 'new' or the status of the job that already has this id.
lock: '' or the job's `u` field (mode letter then lock name).
With max_length > 0 the whole batch is refused (error QUEUEFULL) when the
queued and scheduled jobs plus the batch would exceed it. ]]
local function enqueue(keys, args)
  local prefix = keys[1]
  local max_length = tonumber(args[1])
  for i = 2, #args, 5 do
    if not (num_arg(args[i + 2], nil) and num_arg(args[i + 3], nil) and args[i + 4]) then
      return redis.error_reply('ERR enqueue: malformed job ' .. tostring(args[i]))
    end
  end
  if not max_length then return redis.error_reply('ERR enqueue: malformed max_length') end
  if max_length > 0 then
    local held = kcall(prefix, 'LLEN', prefix .. KEY.ready)
      + kcall(prefix, 'ZCARD', prefix .. KEY.sched)
      + kcall(prefix, 'LLEN', prefix .. KEY.cpu) -- CPU-bound jobs a claim moved aside
    if held + (#args - 1) / 5 > max_length then
      return redis.error_reply("QUEUEFULL queue '" .. string.sub(prefix, 5, -3) .. "' holds "
        .. held .. ' jobs; its limit is ' .. max_length)
    end
  end
  -- the layout this queue's keys are stored in, for workers of later releases
  kcall(prefix, 'HSETNX', prefix .. KEY.meta, 'layout', LAYOUT)
  local now = now_ms()
  local out = {}
  local pushed = {}
  for i = 2, #args, 5 do
    local id, payload = args[i], args[i + 1]
    local delay, at = tonumber(args[i + 2]), tonumber(args[i + 3])
    local jkey = prefix .. KEY.job .. id
    -- one TYPE answers "is the id free" for a new job, the hottest case
    local existing = nil
    local kind = redis.call('TYPE', jkey)['ok']
    if kind == 'hash' then
      local f = read_job(prefix, jkey, {'s'}) -- a hash that is no job is set aside
      existing = f and f[1]
    elseif kind ~= 'none' then
      set_aside(prefix, jkey, 'a ' .. kind .. ' where a job hash belongs')
    end
    if existing then
      out[#out + 1] = existing
    else
      local due = 0
      if at > 0 then due = at elseif delay > 0 then due = now + delay end
      local lock = args[i + 4]
      local task = EVENTS_MAX > 0 and task_of(payload) or ''
      if due > now then
        redis.call('HSET', jkey, 'd', payload, 'a', 0, 'q', now)
        schedule(prefix, id, jkey, due)
        emit(prefix, EV.scheduled, id, task, 0, now, 'due', int_s(due))
      else
        redis.call('HSET', jkey, 'd', payload, 'a', 0, 'q', now, 's', ST.queued)
        pushed[#pushed + 1] = id
        emit(prefix, EV.enqueued, id, task, 0, now)
      end
      if lock ~= '' then redis.call('HSET', jkey, 'u', lock) end
      out[#out + 1] = 'new'
    end
  end
  if #pushed > 0 then
    bulk(prefix, 'LPUSH', prefix .. KEY.ready, pushed)
    signal(prefix)
  end
  return out
end
