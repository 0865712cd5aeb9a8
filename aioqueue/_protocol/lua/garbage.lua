-- The job a key names, when it is a job hash's key.
local function job_of_key(prefix, key)
  local n = #prefix + #KEY.job
  if string.sub(key, #prefix + 1, n) == KEY.job then return string.sub(key, n + 1) end
  return nil
end

-- A name in the garbage area no earlier set-aside took.
local function aside_name(prefix, what, now)
  local base = prefix .. KEY.garbage .. ':' .. what .. ':' .. now
  local dest, n = base, 0
  while redis.call('EXISTS', dest) == 1 do
    n = n + 1
    dest = base .. '.' .. n
  end
  return dest
end

local function record(prefix, dest, reason, now)
  kcall(prefix, 'ZADD', prefix .. KEY.garbage, now, dest)
  kcall(prefix, 'HSET', prefix .. KEY.garbage_why, dest, reason)
  local news = prefix .. KEY.garbage_new
  kcall(prefix, 'RPUSH', news, dest .. '\0' .. reason)
  kcall(prefix, 'LTRIM', news, -NEWS_MAX, -1)
  kcall(prefix, 'HINCRBY', prefix .. KEY.stats, 'quarantined', 1)
  redis.log(redis.LOG_WARNING, 'aioqueue: set aside ' .. dest .. ': ' .. reason)
end

-- Moves a key aside whole (its type, value and fields kept, its expiry dropped).
-- A job's is told on the event stream, with its task and attempt if they read.
local function set_aside(prefix, key, reason)
  local now = now_ms()
  local job = EVENTS_MAX > 0 and job_of_key(prefix, key)
  local task, attempt = '', 0
  if job then
    local f = redis.pcall('HMGET', key, 'd', 'a')
    if not f['err'] then
      task = task_of(f[1]) or ''
      if f[2] and string.find(f[2], '^%d+$') then attempt = f[2] end
    end
  end
  local dest = aside_name(prefix, string.sub(key, #prefix + 1), now)
  redis.call('RENAME', key, dest)
  redis.call('PERSIST', dest)
  record(prefix, dest, reason, now)
  if job then emit(prefix, EV.set_aside, job, task, attempt, now) end
end

-- Keeps `raw`, an entry of the list or sorted set `source` that is no job, as a string.
local function stray(prefix, source, raw, reason)
  local now = now_ms()
  local dest = aside_name(prefix, source, now)
  redis.call('SET', dest, raw)
  record(prefix, dest, reason, now)
end

-- Errors that the value stored at the key caused (not our arguments).
local function content_error(err)
  return string.find(err, '^WRONGTYPE') or string.find(err, 'not an integer', 1, true)
    or string.find(err, 'would overflow', 1, true)
    or string.find(err, 'last possible ID', 1, true) -- a stream planted with the largest id
end

local function refused(prefix, key, cmd, reply)
  if not content_error(reply.err) then error(reply) end
  local kind = redis.call('TYPE', key)['ok']
  set_aside(prefix, key, cmd .. ' refused this ' .. kind .. ': ' .. reply.err)
end

-- A command on one key of the queue. When the key holds something the command
-- cannot work on (a planted string where a list belongs, a counter that is not
-- a number), the key is set aside and the command runs on a fresh key.
kcall = function(prefix, cmd, key, ...)
  local reply = redis.pcall(cmd, key, ...)
  if type(reply) == 'table' and reply.err then
    refused(prefix, key, cmd, reply)
    reply = redis.call(cmd, key, ...)
  end
  return reply
end

-- Reads job fields; a job key of the wrong type is set aside and reads as missing.
local function job_fields(prefix, jkey, ...)
  local got = redis.pcall('HMGET', jkey, ...)
  if got['err'] then
    set_aside(prefix, jkey, got['err'])
    return {}
  end
  return got
end

-- STATUSES (the prelude's): the values a job's `s` may have
-- An integer as HINCRBY reads one (no leading zeros, no '-0'), in at most 12
-- characters: the Lua number a count becomes prints back exactly. One digit,
-- the usual count, without a pattern: claim checks every job it hands out.
local function is_int(v)
  local n = #v
  if n == 1 then return v >= '0' and v <= '9' end
  return n <= 12 and string.find(v, '^%-?[1-9]%d*$') ~= nil
end
-- whether a job field code does arithmetic or lookups on parses (others: any bytes)
local function field_ok(name, v)
  if name == 's' then return STATUSES[v] ~= nil end
  if name == 'a' or name == 'l' or name == 'ab' then return is_int(v) end
  if name == 'u' then
    local mode = string.byte(v, 1)
    return #v >= 2 and (mode == 119 or mode == 100) -- 'w' or 'd', then a name
  end
  return true
end

-- The fields `names` (the first is always 's') of job `jkey`, checked before
-- anything is written: nil, 'missing' when there is no job; nil, 'aside' when
-- the job does not parse (a wrong type, no status, a field field_ok refuses),
-- which is then set aside whole.
local function read_job(prefix, jkey, names)
  local f = redis.pcall('HMGET', jkey, unpack(names))
  if f['err'] then
    local kind = redis.call('TYPE', jkey)['ok']
    set_aside(prefix, jkey, 'a ' .. kind .. ' where a job hash belongs')
    return nil, 'aside'
  end
  if not f[1] then
    if redis.call('EXISTS', jkey) == 0 then return nil, 'missing' end
    set_aside(prefix, jkey, 'job hash without a status')
    return nil, 'aside'
  end
  for i = 1, #names do
    local v = f[i]
    if v and not field_ok(names[i], v) then
      set_aside(prefix, jkey, 'job field ' .. names[i] .. ' does not parse')
      return nil, 'aside'
    end
  end
  return f
end

-- Strict UTF-8 (what the worker decodes ids with), for ids with non-ASCII bytes.
local function utf8_ok(s)
  local i, n = 1, #s
  while i <= n do
    local c = string.byte(s, i)
    local len = 1
    if c >= 0xF0 and c <= 0xF4 then len = 4
    elseif c >= 0xE0 and c <= 0xEF then len = 3
    elseif c >= 0xC2 and c <= 0xDF then len = 2
    elseif c >= 0x80 then return false end
    if i + len - 1 > n then return false end
    for j = i + 1, i + len - 1 do
      local b = string.byte(s, j)
      if b < 0x80 or b > 0xBF then return false end
    end
    local b = string.byte(s, i + 1)
    if (c == 0xE0 and b < 0xA0) or (c == 0xED and b > 0x9F)
        or (c == 0xF0 and b < 0x90) or (c == 0xF4 and b > 0x8F) then
      return false -- overlong, surrogate, past U+10FFFF
    end
    i = i + len
  end
  return true
end

local function valid_id(id)
  if #id == 0 or #id > 800 then return false end
  -- one scan for the common case, a plain ASCII id
  if not string.find(id, '[%s%z\128-\255]') then return true end
  return not string.find(id, '[%s%z]') and utf8_ok(id)
end

-- The job an entry of list or sorted set `source` names, read like read_job;
-- an entry that is not a job id, or names no job, is kept in the garbage area.
local function entry_job(prefix, source, id, names)
  if not valid_id(id) then
    stray(prefix, source, id, source .. ' entry is not a job id')
    return nil
  end
  local f, why = read_job(prefix, prefix .. KEY.job .. id, names)
  if why == 'missing' then stray(prefix, source, id, source .. ' entry names no job') end
  return f
end

-- A numeric argument; `default` for a missing, non-numeric or non-finite one.
local function num_arg(v, default)
  local n = tonumber(v)
  if not n or n ~= n or n == math.huge or n == -math.huge then return default end
  return n
end
