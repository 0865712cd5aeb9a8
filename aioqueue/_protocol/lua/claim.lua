-- The next delivery token counter. One that is not a counter is set aside and
-- the new one starts at the Redis time in ms, past any token the old one gave.
local function next_seq(prefix, now)
  local key = prefix .. KEY.seq
  local seq = redis.pcall('INCR', key)
  if type(seq) == 'table' then
    refused(prefix, key, 'INCR', seq)
    seq = redis.call('INCRBY', key, now)
  end
  return seq
end

-- A claim whose reply was lost (its link dropped) and that the worker sends
-- again must hand back the same deliveries, not take new ones: those would be
-- leased to nobody until their lease ran out. So each claim carries an id, and
-- the last claim of each worker on this queue is kept for one lease as
-- '<claim id> <job id> <token> ...'. A replay hands back those still active
-- under their token, in claim's reply layout.
local function replay_claim(prefix, worker, cid)
  local key = prefix .. KEY.claimed .. worker
  local got = redis.pcall('GET', key)
  if type(got) == 'table' and got['err'] then
    -- before any write: a refusal (an ACL without this key) fails the claim whole
    if not content_error(got['err']) then error(got) end
    set_aside(prefix, key, 'a ' .. redis.call('TYPE', key)['ok'] .. ' where a claim record belongs')
    return nil
  end
  if not got or string.sub(got, 1, #cid + 1) ~= cid .. ' ' then return nil end
  local parts = {}
  for part in string.gmatch(got, '%S+') do parts[#parts + 1] = part end
  local waiting = redis.pcall('LLEN', prefix .. KEY.cpu)
  if type(waiting) ~= 'number' then waiting = 0 end
  local out = {0, 0, 0, waiting, 0}
  for i = 2, #parts - 3, 4 do
    local id, token, cpu_bound, wait = parts[i], parts[i + 1], parts[i + 2], parts[i + 3]
    local f = read_job(prefix, prefix .. KEY.job .. id, {'s', 'k', 'a', 'l', 'd', 'u'})
    if f and f[1] == ST.active and f[2] == token then
      out[#out + 1] = id
      out[#out + 1] = token
      out[#out + 1] = tonumber(f[3] or 0)
      out[#out + 1] = tonumber(f[4] or 0)
      out[#out + 1] = f[5] or ''
      out[#out + 1] = f[6] or ''
      out[#out + 1] = tonumber(cpu_bound) or 0
      out[#out + 1] = tonumber(wait) or -1
    end
  end
  out[1] = next_event(prefix)
  return out
end

-- jobs: claim's eight values per delivery (id, token first)
local function remember_claim(prefix, worker, cid, jobs, lease)
  lease = math.floor(lease)
  if #jobs == 0 or lease < 1 then return end -- SET PX refuses 0: nothing may fail after writes
  local parts = {cid}
  for i = 1, #jobs, 8 do
    parts[#parts + 1] = jobs[i]
    parts[#parts + 1] = jobs[i + 1]
    parts[#parts + 1] = jobs[i + 6] -- CPU-bound: 1 or 0
    parts[#parts + 1] = string.format('%d', jobs[i + 7]) -- the wait (ms, -1: unknown)
  end
  kcall(prefix, 'SET', prefix .. KEY.claimed .. worker, table.concat(parts, ' '), 'PX', lease)
end

-- Job fields claim reads, checked (read_job) before it changes anything.
local CLAIM_FIELDS = {'s', 'a', 'l', 'd', 'u', 'ab', 'q', 'due'}

-- ids looked at per claim beyond the n asked for: bounds the Redis time of a
-- claim that moves CPU-bound jobs aside or passes over entries left behind
local SCAN_SLACK = 500

--[[ claim(prefix; n, worker, lease_ms, promote_limit, claim_id, cpu_free, run_free, cpu_task ...)
Returns {wait_us, promoted, reaped, aside, k, <k set-aside lines>,
id1, token1, attempt1, lost1, payload1, lock1, cpu1, wait1, ...}. wait_us is how long
(in microseconds) an idle worker may block before something (a due job, an
expired lease) needs it; promoted and reaped count the due jobs and expired
leases this call moved to the ready list (each at most promote_limit); aside
is how many CPU-bound jobs wait in `cpu`; a set-aside line is
'<garbage key>\0<reason>' for the worker to log, of this or any earlier call.
lost counts deliveries of the job whose worker died; lock is its `u` field or
''; cpu is 1 for a job of one of the worker's CPU-bound tasks; wait is the ms
the job waited since it was due (or enqueued), -1 when unknown. An entry of the
ready list that names no job, and a job that does not parse, are set aside;
the rest of the batch is claimed as usual. A claim_id sent again (after a lost
reply) returns the deliveries that call made (see replay_claim).

Fair dispatch: the worker names its CPU-bound tasks (cpu_task ...), how many
more of their deliveries it can run (cpu_free) and how many more jobs of any
kind it can start now (run_free). It gets a CPU-bound job only if both allow
it at the job's place in this claim, so that the job starts at once rather
than wait behind others. A job of such a task past that is not taken: it
moves, oldest first, to the `cpu` list, and `cwake` wakes an idle worker with
a free CPU slot. The other jobs keep their order in `ready`. The `cpu` list is
served first (its jobs are older than those left in `ready`) to every worker
with a free slot; a worker that names no CPU-bound task takes its jobs like
any other, so none is stranded once the workers that moved them aside are gone. ]]
local function claim(keys, args)
  local prefix = keys[1]
  local n, worker, lease = tonumber(args[1]), args[2], tonumber(args[3])
  local limit = tonumber(args[4])
  local cid = args[5] or ''
  local cpu_free, run_free = tonumber(args[6] or 0), tonumber(args[7] or args[1])
  if not (n and lease and limit and cpu_free and run_free) then
    return redis.error_reply('ERR claim: malformed arguments')
  end
  if cid ~= '' then
    local again = replay_claim(prefix, worker, cid)
    if again then return again end
  end
  local cpu = nil
  if #args > 7 then
    cpu = {}
    for i = 8, #args do cpu[args[i]] = true end
    -- the worker blocks on its own nudge list too: a planted value there is set aside
    kcall(prefix, 'LLEN', prefix .. KEY.nudge .. worker)
  end
  local now = now_ms()
  local promoted, reaped = promote_and_reap(prefix, now, limit)
  local ready, aside = prefix .. KEY.ready, prefix .. KEY.cpu
  local jobs = {}
  local leases = {}
  local deadline = now + lease
  local seq = nil
  local taken, cpu_taken, looked = 0, 0, 0

  -- A queued job of one of the worker's CPU-bound tasks (an abort asked for
  -- while it was queued is not run: it ends below, wherever it is).
  local function is_cpu(f)
    return cpu ~= nil and f ~= nil and f[1] == ST.queued and f[4] ~= nil and not f[6]
      and cpu[task_of(f[4])] == true
  end

  -- Claims one entry's job if it is queued (and its lock free); passes over the rest.
  local function take(id, f, cpu_bound)
    if not seq then seq = next_seq(prefix, now) end
    looked = looked + 1
    local jkey = prefix .. KEY.job .. id
    local status = f and f[1]
    local token = seq .. '.' .. looked
    if status == ST.queued then
      if not f[4] then
        set_aside(prefix, jkey, 'queued job without a payload')
        status = 'aside'
      elseif f[6] then
        abort_now(prefix, id, jkey, f[6], now, task_of(f[4]), f[2] or 0)
        status = ST.aborted
      elseif f[5] and not take_lock(prefix, id, jkey, token, f[5], now, deadline,
          EVENTS_MAX > 0 and task_of(f[4]) or '', f[2] or 0) then
        status = 'locked' -- dropped or parked by take_lock
      end
    elseif status == ST.aborted and f[6] then
      -- aborted while queued: its record's expiry starts now that its entry is gone
      redis.call('HDEL', jkey, 'ab')
      expire_record(jkey, tonumber(f[6]))
    elseif status == ST.aborted and not f[4] then
      redis.call('DEL', jkey) -- the tombstone of a job aborted with result_ttl=0
    end
    if status == ST.queued then
      local attempt = tonumber(f[2] or 0) + 1
      redis.call('HSET', jkey, 's', ST.active, 'k', token, 'w', worker, 'st', now, 'a', attempt)
      leases[#leases + 1] = deadline
      leases[#leases + 1] = id
      jobs[#jobs + 1] = id
      jobs[#jobs + 1] = token
      jobs[#jobs + 1] = attempt
      jobs[#jobs + 1] = tonumber(f[3] or 0)
      jobs[#jobs + 1] = f[4]
      jobs[#jobs + 1] = f[5] or ''
      jobs[#jobs + 1] = cpu_bound and 1 or 0
      -- waited since it was due (scheduled, retried, back from a dead worker) or
      -- enqueued; -1: neither time is known (a job an older version stored)
      local since = math.max(tonumber(f[7]) or 0, tonumber(f[8]) or 0)
      local wait = since > 0 and math.max(0, now - since) or -1
      jobs[#jobs + 1] = wait
      taken = taken + 1
      if cpu_bound then cpu_taken = cpu_taken + 1 end
      if EVENTS_MAX > 0 then
        if wait >= 0 then
          emit(prefix, EV.started, id, task_of(f[4]), attempt, now, 'worker', worker,
            'wait_ms', int_s(wait))
        else
          emit(prefix, EV.started, id, task_of(f[4]), attempt, now, 'worker', worker)
        end
      end
    end
    -- other statuses (an entry left behind) are passed over
  end

  local k = n
  if cpu ~= nil then k = math.min(n, cpu_free, run_free) end
  if k > 0 then
    local ids = kcall(prefix, 'RPOP', aside, k)
    if ids then
      for _, id in ipairs(ids) do
        local f = entry_job(prefix, KEY.cpu, id, CLAIM_FIELDS)
        take(id, f, is_cpu(f))
      end
    end
  end
  local moved = {}
  while taken < n and looked + #moved < n + SCAN_SLACK do
    local ids = kcall(prefix, 'RPOP', ready, n - taken)
    if not ids then break end
    for _, id in ipairs(ids) do
      local f = entry_job(prefix, KEY.ready, id, CLAIM_FIELDS)
      local cpu_bound = is_cpu(f)
      if cpu_bound and (cpu_taken >= cpu_free or taken >= run_free) then
        moved[#moved + 1] = id
      else
        take(id, f, cpu_bound)
      end
    end
  end
  if #moved > 0 then bulk(prefix, 'LPUSH', aside, moved) end -- oldest nearest the tail
  if #leases > 0 then bulk(prefix, 'ZADD', prefix .. KEY.active, leases) end
  if kcall(prefix, 'LLEN', ready) > 0 then
    signal(prefix)
  else
    kcall(prefix, 'LTRIM', prefix .. KEY.wake, 1, 0) -- empties it; a planted value is set aside
  end
  if cid ~= '' then remember_claim(prefix, worker, cid, jobs, lease) end
  local cwake = prefix .. KEY.cwake
  local waiting = kcall(prefix, 'LLEN', aside)
  if waiting > 0 then
    if kcall(prefix, 'LLEN', cwake) == 0 then redis.call('RPUSH', cwake, '1') end
  else
    kcall(prefix, 'LTRIM', cwake, 1, 0)
  end
  local out = {next_event(prefix), promoted, reaped, waiting, 0}
  local news = kcall(prefix, 'LPOP', prefix .. KEY.garbage_new, 100) or {}
  out[5] = #news
  for _, line in ipairs(news) do out[#out + 1] = line end
  for _, v in ipairs(jobs) do out[#out + 1] = v end
  return out
end
