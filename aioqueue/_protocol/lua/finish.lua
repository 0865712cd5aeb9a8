-- Jobs finished per 10-second bucket (`tput:<bucket>`, kept 2 minutes), for
-- `aioqueue info`: two commands per finish call, whatever the batch size.
local TPUT_BUCKET_MS = 10000
local function count_finished(prefix, now, n)
  if n > 0 then
    local key = prefix .. KEY.tput .. math.floor(now / TPUT_BUCKET_MS)
    kcall(prefix, 'INCRBY', key, n)
    redis.call('EXPIRE', key, 120)
  end
end

-- Attempts ended per minute by outcome (`tpm:<minute>`, hash outcome -> count,
-- kept a little over an hour): the dashboard's hour of throughput and failure
-- rate. One HINCRBY per outcome the batch had, and one EXPIRE.
local MINUTE_MS = 60000
local MINUTE_OUTCOMES = {ST.complete, ST.failed, 'retried', ST.aborted}
local function count_minute(prefix, now, counts)
  local key = prefix .. KEY.tpm .. math.floor(now / MINUTE_MS)
  local any = false
  for _, outcome in ipairs(MINUTE_OUTCOMES) do
    local n = counts[outcome]
    if n then
      kcall(prefix, 'HINCRBY', key, outcome, n)
      any = true
    end
  end
  if any then redis.call('EXPIRE', key, 3720) end
end

-- an outcome that ends the job names the status it ends in
local OUTCOMES = {[ST.complete] = true, [ST.failed] = true, retry = true, release = true,
  [ST.aborted] = true}
local FINISH_FIELDS = {'s', 'k', 'wt', 'u', 'a', 'ab'}
-- and with the event stream on: start time, worker, payload (for the task name)
local FINISH_EVENT_FIELDS = {'s', 'k', 'wt', 'u', 'a', 'ab', 'st', 'w', 'd'}

--[[ finish(prefix; [id, token, outcome, blob, ttl_ms, delay_ms] ...)
outcome: complete | failed | retry | release | aborted.
Returns per item 1; 0 when the token no longer owns the job (stale); 2 when
the job no longer parses and was set aside. A retry or hand-back of a job whose
abort was asked for ends it as aborted. ]]
local function finish(keys, args)
  local prefix = keys[1]
  for i = 1, #args, 6 do
    if not (OUTCOMES[args[i + 2]] and args[i + 3] and num_arg(args[i + 4], nil)
        and num_arg(args[i + 5], nil)) then
      return redis.error_reply('ERR finish: malformed outcome for ' .. tostring(args[i]))
    end
  end
  local now = now_ms()
  local out = {}
  local counts = {}
  local done = {}
  local finished = 0
  local fields = EVENTS_MAX > 0 and FINISH_EVENT_FIELDS or FINISH_FIELDS
  for i = 1, #args, 6 do
    local id, token, outcome, blob = args[i], args[i + 1], args[i + 2], args[i + 3]
    local ttl, delay = num_arg(args[i + 4]), num_arg(args[i + 5])
    local jkey = prefix .. KEY.job .. id
    local held, why = read_job(prefix, jkey, fields)
    if why == 'aside' then
      done[#done + 1] = id
      out[#out + 1] = 2
    elseif not held or held[1] ~= ST.active or held[2] ~= token then
      counts['stale'] = (counts['stale'] or 0) + 1
      out[#out + 1] = 0
    else
      done[#done + 1] = id
      -- what its event says: the attempt's task, worker and run time (Redis clock)
      local task, attempt, worker, ran = '', held[5] or 0, '', '0'
      if EVENTS_MAX > 0 then
        task, worker = task_of(held[9]) or '', held[8] or ''
        ran = int_s(math.max(0, now - (tonumber(held[7]) or now)))
      end
      if held[4] then release_lock(prefix, id, token, held[4]) end
      if held[6] and (outcome == 'release' or outcome == 'retry') then
        abort_now(prefix, id, jkey, held[6], now, task, attempt, 'worker', worker,
          'duration_ms', ran)
      -- the token `k` may stay: it only counts while the status is active
      elseif outcome == 'release' then
        redis.call('HINCRBY', jkey, 'a', -1)
        redis.call('HSET', jkey, 's', ST.queued, 'due', now)
        kcall(prefix, 'RPUSH', prefix .. KEY.ready, id)
        signal(prefix)
        emit(prefix, EV.released, id, task, attempt, now, 'worker', worker)
      elseif outcome == 'retry' then
        redis.call('HSET', jkey, 'e', blob)
        counts['retried'] = (counts['retried'] or 0) + 1
        if delay > 0 then
          schedule(prefix, id, jkey, now + delay)
        else
          redis.call('HSET', jkey, 's', ST.queued, 'due', now)
          kcall(prefix, 'LPUSH', prefix .. KEY.ready, id)
          signal(prefix)
        end
        emit(prefix, EV.retried, id, task, attempt, now, 'worker', worker, 'duration_ms', ran,
          'error', EVENTS_MAX > 0 and error_type(blob) or '',
          'due', EVENTS_MAX > 0 and int_s(now + math.max(delay, 0)) or '')
      else
        local field = 'r'
        if outcome ~= ST.complete then field = 'e' end
        counts[outcome] = (counts[outcome] or 0) + 1
        finished = finished + 1
        notify(prefix, id, jkey, outcome, blob, held[3])
        if ttl == 0 and outcome ~= ST.failed then
          redis.call('DEL', jkey)
        else
          redis.call('HSET', jkey, 's', outcome, field, blob, 'et', now)
          if held[3] then redis.call('HDEL', jkey, 'wt') end
          if outcome == ST.failed then
            kcall(prefix, 'ZADD', prefix .. KEY.dead, now, id)
          elseif ttl > 0 then
            redis.call('PEXPIRE', jkey, ttl)
          end
        end
        if outcome == ST.failed then
          -- the attempt that ended it, then its move to the dead-letter set
          local err = EVENTS_MAX > 0 and error_type(blob) or ''
          emit(prefix, EV.failed, id, task, attempt, now, 'worker', worker, 'duration_ms', ran,
            'error', err)
          emit(prefix, EV.dead, id, task, attempt, now, 'worker', worker, 'duration_ms', ran,
            'error', err)
        else
          local event = outcome == ST.complete and EV.completed or EV.aborted
          emit(prefix, event, id, task, attempt, now, 'worker', worker, 'duration_ms', ran)
        end
      end
      out[#out + 1] = 1
    end
  end
  if #done > 0 then bulk(prefix, 'ZREM', prefix .. KEY.active, done) end
  for name, n in pairs(counts) do
    kcall(prefix, 'HINCRBY', prefix .. KEY.stats, name, n)
  end
  count_finished(prefix, now, finished)
  count_minute(prefix, now, counts)
  return out
end
