--[[ enqueue(prefix; max_length, [id, payload, delay_ms, at_ms, lock] ...)
Returns per job: 'new' or the status of the job that already has this id.
lock: '' or the job's `u` field (mode letter then lock name).
With max_length > 0 the whole batch is refused (error QUEUEFULL) when the
queued and scheduled jobs plus the batch would exceed it. ]]
local function enqueue(keys, args)
  local prefix = keys[1]
  local max_length = tonumber(args[1])
  local jprefix = prefix .. KEY.job
  local count = (#args - 1) / 5
  -- every job's numbers are checked here, where a malformed job fails the call
  -- before anything is written; a batch keeps its keys (a single job, the
  -- hottest call, makes no table: each costs Redis's Lua about half a µs)
  local jkeys, seen, repeated = nil, nil, false
  if count > 1 then jkeys, seen = {}, {} end
  for i = 2, #args, 5 do
    if not (num_arg(args[i + 2], nil) and num_arg(args[i + 3], nil) and args[i + 4]) then
      return redis.error_reply('ERR enqueue: malformed job ' .. tostring(args[i]))
    end
    if seen then
      local id = args[i]
      if seen[id] then repeated = true end
      seen[id] = true
      jkeys[#jkeys + 1] = jprefix .. id
    end
  end
  if not max_length then return redis.error_reply('ERR enqueue: malformed max_length') end
  if max_length > 0 then
    local held = kcall(prefix, 'LLEN', prefix .. KEY.ready)
      + kcall(prefix, 'ZCARD', prefix .. KEY.sched)
      + kcall(prefix, 'LLEN', prefix .. KEY.cpu) -- CPU-bound jobs a claim moved aside
    if held + count > max_length then
      return redis.error_reply("QUEUEFULL queue '" .. string.sub(prefix, 5, -3) .. "' holds "
        .. held .. ' jobs; its limit is ' .. max_length)
    end
  end
  -- one EXISTS of every id answers "are they all free", the hottest case; an id
  -- taken (or twice in the batch) has each job looked at on its own
  local check = repeated
  if count == 1 then
    check = redis.call('EXISTS', jprefix .. args[2]) > 0
  end
  for c = 1, jkeys and #jkeys or 0, 2000 do
    if check then break end
    check = redis.call('EXISTS', unpack(jkeys, c, math.min(c + 1999, #jkeys))) > 0
  end
  -- the layout this queue's keys are stored in, for workers of later releases
  kcall(prefix, 'HSETNX', prefix .. KEY.meta, 'layout', LAYOUT)
  local now = now_ms()
  local now_str = now_string(now)
  local out = {}
  local pushed = {}
  for j = 1, count do
    local i = j * 5 - 3
    local id, payload = args[i], args[i + 1]
    local jkey = jkeys and jkeys[j] or jprefix .. id
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
      local due, at, delay = 0, tonumber(args[i + 3]), tonumber(args[i + 2])
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
