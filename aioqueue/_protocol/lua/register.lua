-- Every Function's first argument is the event stream's cap (EVENTS_MAX), taken
-- off before the Function sees its own: checked first, it fails nothing half way.
-- The call's event entries are written once it has returned (base.lua).
local function register(name, fn, flags)
  redis.register_function{
    function_name = 'aq___VERSION___' .. name,
    callback = function(keys, args)
      local raw = table.remove(args, 1)
      if not raw or #raw > 12 or not string.find(raw, '^%d+$') then
        return redis.error_reply('ERR ' .. name .. ': malformed event stream length')
      end
      EVENTS_MAX, EVENTS_ARG, now_n = tonumber(raw), raw, nil
      drop_events() -- rows of a call that raised
      local reply = fn(keys, args)
      if events_held() then flush_events() end
      return reply
    end,
    flags = flags or {},
  }
end

-- When Redis is out of memory (maxmemory, noeviction) new work is refused:
-- enqueue and requeue fail fast with OOM. Everything that finishes or frees
-- work already accepted must still go through, or running jobs could neither
-- be acknowledged nor drain the queue: those functions are `allow-oom`.
local DRAIN = {'allow-oom'}

register('enqueue', enqueue)
register('requeue', requeue)
register('cron_fire', cron_fire)
register('cron_define', cron_define)
register('claim', claim, DRAIN)
register('finish', finish, DRAIN)
register('heartbeat', heartbeat, DRAIN)
register('deregister', deregister, DRAIN)
register('abort', abort, DRAIN)
register('watch', watch, DRAIN)
register('unwatch', unwatch, DRAIN)
register('quarantine', quarantine, DRAIN)
register('purge', purge, DRAIN)
register('library_beat', library_beat, DRAIN)
register('library_users', library_users, DRAIN)
