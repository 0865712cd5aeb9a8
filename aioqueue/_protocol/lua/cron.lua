-- The schedule registered for a cron name (`<prefix>crondef`), false when none.
local function cron_definition(prefix, name)
  return kcall(prefix, 'HGET', prefix .. KEY.crondef, name)
end

--[[ cron_define(prefix; name, definition)
A worker starting with cron job `name` registers its schedule: the newest
definition wins, the workers with another one stop firing that name
(cron_fire answers 'superseded'). Returns the definition it replaced, or false. ]]
local function cron_define(keys, args)
  local prefix, name, definition = keys[1], args[1], args[2]
  if not definition then return redis.error_reply('ERR cron_define: malformed arguments') end
  local previous = cron_definition(prefix, name)
  kcall(prefix, 'HSET', prefix .. KEY.crondef, name, definition)
  return previous
end

--[[ cron_fire(prefix; name, tick_ms, id, payload, lock, definition)
Fires one tick of the cron job `name` at most once, whichever worker asks first:
`<prefix>cron` keeps the last tick fired per name and only a later tick fires.
Returns {'fired' | 'dup' | 'overlap' | 'superseded', now} or {'early', ms to
wait}; 'overlap' consumes the tick without a job because the lock (no_overlap)
is still held; 'superseded': `name` has another definition now (cron_define),
the caller's schedule is an old one. definition '': not checked. ]]
local function cron_fire(keys, args)
  local prefix = keys[1]
  local name, tick, id, payload, lock = args[1], tonumber(args[2]), args[3], args[4], args[5]
  if not (tick and payload and lock) then
    return redis.error_reply('ERR cron_fire: malformed arguments')
  end
  local definition = args[6] or ''
  local now = now_ms()
  if now < tick then return {'early', tick - now} end
  local registered = false
  if definition ~= '' then
    registered = cron_definition(prefix, name)
    if registered and registered ~= definition then return {'superseded', now} end
  end
  local crons = prefix .. KEY.cron
  local last = kcall(prefix, 'HGET', crons, name)
  if last and not string.find(last, '^%d+$') then
    set_aside(prefix, crons, 'last tick of cron ' .. name .. ' is not a number')
    last = false
  end
  if last and tonumber(last) >= tick then return {'dup', now} end
  kcall(prefix, 'HSET', crons, name, tick)
  if definition ~= '' and not registered then
    kcall(prefix, 'HSET', prefix .. KEY.crondef, name, definition)
  end
  if lock ~= '' then
    local lkey = prefix .. KEY.lock .. string.sub(lock, 2)
    if lock_live(prefix, lock_value(prefix, lkey), now) then
      kcall(prefix, 'HINCRBY', prefix .. KEY.stats, 'cron_overlap', 1)
      return {'overlap', now}
    end
  end
  local jkey = prefix .. KEY.job .. id
  local kind = redis.call('TYPE', jkey)['ok']
  if kind == 'hash' then
    if read_job(prefix, jkey, {'s'}) then return {'dup', now} end
  elseif kind ~= 'none' then
    set_aside(prefix, jkey, 'a ' .. kind .. ' where a job hash belongs')
  end
  redis.call('HSET', jkey, 'd', payload, 'a', 0, 'q', now, 's', ST.queued)
  if lock ~= '' then redis.call('HSET', jkey, 'u', lock) end
  kcall(prefix, 'LPUSH', prefix .. KEY.ready, id)
  signal(prefix)
  emit(prefix, EV.enqueued, id, EVENTS_MAX > 0 and task_of(payload) or '', 0, now)
  return {'fired', now}
end
