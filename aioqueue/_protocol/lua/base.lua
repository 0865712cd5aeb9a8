local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

--[[ The garbage area. Redis does not roll a Function back when it errors half
way, so nothing a Function reads may make it error: a key of the wrong type,
a job field that does not parse, a list entry that names no job. Each is moved
(or copied) under `<prefix>garbage:<what>:<ms>` with its raw bytes, never
deleted; `<prefix>garbage` (zset: name -> ms) lists them, `<prefix>garbage:why`
(hash: name -> reason) says why, and `<prefix>garbage:new` holds a line per
set-aside for the next claim to hand to its worker, which logs it. ]]
local NEWS_MAX = 1000 -- unread set-aside lines kept (the set-asides themselves all are)
local kcall -- forward: set-asides write through it, and it sets keys aside

--[[ The event stream `<prefix>events` (docs/reference/events.md): the Function
call that changes a job's state appends what it did, with XADD MAXLEN ~ (a
stream id and `ts` from this Redis's clock). Every Function takes the cap as
its first argument (see `register`); 0 writes nothing. The stream goes
through kcall like any key: a planted value of another type there is set
aside and the entry goes to a fresh stream, the state change goes on. ]]
local EVENTS_MAX = 0
local EVENTS_ARG = '0' -- EVENTS_MAX as the caller sent it, checked digits

-- Numbers go to XADD as strings made here: Redis 7.0 turns a Lua number into
-- an argument with '%.17g', which made number fields cost more than the entry.
local SMALL = {} -- 0 .. 99 as strings, filled as they come (no `string` at load time)
local function int_s(n)
  local v = SMALL[n]
  if v then return v end
  v = string.format('%d', n)
  if n >= 0 and n < 100 and n == math.floor(n) then SMALL[n] = v end
  return v
end
local now_n, now_s = nil, nil -- one conversion of `now` per call, however many entries

-- `now` as XADD and HSET get it: Redis 7.0 formats a Lua number argument with
-- '%.17g', so numbers go as strings, and this one is made once per call.
local function now_string(now)
  if now ~= now_n then now_n, now_s = now, string.format('%d', now) end
  return now_s
end

-- The string that starts at byte `at` of a MessagePack value, or nil.
local function mp_str(s, at)
  local head = string.byte(s, at)
  if not head then return nil end
  if head >= 0xa0 and head <= 0xbf then -- fixstr
    return string.sub(s, at + 1, at + head - 0xa0)
  elseif head == 0xd9 then -- str 8
    local len = string.byte(s, at + 1)
    if len then return string.sub(s, at + 2, at + 1 + len) end
  elseif head == 0xda then -- str 16
    local hi, lo = string.byte(s, at + 1, at + 2)
    if lo then return string.sub(s, at + 3, at + 2 + hi * 256 + lo) end
  end
  return nil
end

-- The task name in a payload aioqueue wrote (job.py's Envelope, optionally
-- signed as in signing.py): a MessagePack array whose first item is the
-- envelope version, then the task name. nil for anything else: such a job is
-- dispatched as I/O-bound, and the worker that reads it sets it aside if it is
-- garbage. SIGNED_MAGIC, SIGNED_HEADER and ENVELOPE_VERSION are the prelude's.
local function task_of(payload)
  if not payload then return nil end
  local at = 1
  if string.sub(payload, 1, #SIGNED_MAGIC) == SIGNED_MAGIC then at = SIGNED_HEADER + 1 end
  local array, version = string.byte(payload, at, at + 1)
  if not version or array < 0x92 or array > 0x9f or version ~= ENVELOPE_VERSION then return nil end
  return mp_str(payload, at + 2)
end

-- The exception type an error record names (envelope.py's ErrorInfo: a
-- MessagePack array, the type first); '' when the record is not one.
local function error_type(blob)
  local array = string.byte(blob, 1)
  if not array or array < 0x92 or array > 0x9f then return '' end
  return mp_str(blob, 2) or ''
end

--[[ Entries are gathered through the call and written at its end (register's
wrapper calls flush_events): one XADD per kind of event, holding every job
the call moved that way, so a claim of 100 jobs writes one `started` entry,
not 100. An XADD costs Redis about 3 µs whatever it holds, a job in a shared
entry well under one. An entry of one job has the plain fields (job, task,
attempt, ...); one of several has `n` and each other field is either one
value for all or n values split by spaces, each with ' ' and '%' written
%20 and %25 (docs/reference/events.md). A job's rows stay in the order its
state changed: a row joins an entry only if no later entry holds that job. ]]
local pending = {} -- this call's entries, in the order first written
local last_of = {} -- job id -> the index in `pending` of its latest row
local rows_per_entry = {} -- prefix -> running mean of rows per entry (the cap)

--[[ Most calls write one row (an enqueue, a finish of one job): it is kept in
these locals, not in tables, and written by one XADD built on the stack. The
Lua of Redis 7.0 spends more on a table than the XADD costs, and tables for a
one-row entry (the entry, its columns, the XADD's arguments) had made the
stream cost an enqueue about 12 µs. A second row turns the first into an
entry of `pending` before it is added. ]]
local one = false -- a row is held in the locals below
local one_prefix, one_event, one_id, one_task, one_attempt, one_ts, one_extra

-- The entry a second row joins or starts: the held row, turned into one.
local function spill()
  one = false
  local extra, nx = one_extra, 0
  if extra then nx = #extra else extra = {} end
  local entry = {prefix = one_prefix, event = one_event, n = 1, nx = nx, job = {one_id},
    task = {one_task}, attempt = {one_attempt}, ts = {one_ts}, extra = extra}
  for k = 2, nx, 2 do extra[k] = {extra[k]} end
  pending[1] = entry
  last_of[one_id] = 1
end

-- Adds one row; `...` are the optional field/value pairs (never nil, numbers as
-- int_s strings); the same event always comes with the same field names.
-- attempt: a job field's string, or a number. (No table per row: a claim of
-- many jobs calls this for each, and Lua's allocations are what cost here.)
local function emit(prefix, event, id, task, attempt, now, ...)
  if EVENTS_MAX == 0 then return end
  if now ~= now_n then now_string(now) end -- once per call, not a Lua call per row
  if type(attempt) ~= 'string' then attempt = int_s(attempt or 0) end
  local nx = select('#', ...)
  if not one and #pending == 0 then
    one, one_prefix, one_event, one_id, one_task, one_attempt, one_ts = true, prefix, event,
      id, task or '', attempt, now_s
    one_extra = nx > 0 and {...} or nil
    return
  end
  if one then spill() end
  local entry
  for i = last_of[id] or 1, #pending do
    local e = pending[i]
    if e.event == event and e.prefix == prefix and e.nx == nx then
      local same = true
      for k = 1, nx, 2 do
        if e.extra[k] ~= (select(k, ...)) then same = false break end
      end
      if same then
        entry = e
        last_of[id] = i
        break
      end
    end
  end
  if not entry then
    entry = {prefix = prefix, event = event, n = 0, nx = nx, job = {}, task = {}, attempt = {},
      ts = {}, extra = {...}}
    for k = 2, nx, 2 do entry.extra[k] = {} end
    pending[#pending + 1] = entry
    last_of[id] = #pending
  end
  local n = entry.n + 1
  entry.n = n
  entry.job[n], entry.task[n], entry.attempt[n], entry.ts[n] = id, task or '', attempt, now_s
  local cols = entry.extra
  for k = 2, nx, 2 do cols[k][n] = (select(k, ...)) end
end

local ESCAPES = {[' '] = '%20', ['%'] = '%25'}
local function needs_escape(v)
  return string.find(v, '%', 1, true) or string.find(v, ' ', 1, true)
end
local function esc(v)
  if needs_escape(v) then return (string.gsub(v, '[ %%]', ESCAPES)) end
  return v
end

-- One field of an entry of n rows: the one value all share, or all n.
local function column(values, n)
  local first, same = values[1], true
  for i = 2, n do
    if values[i] ~= first then same = false break end
  end
  if same then return esc(first) end
  local plain = true
  for i = 1, n do
    if needs_escape(values[i]) then plain = false break end
  end
  if plain then return table.concat(values, ' ', 1, n) end
  local out = {}
  for i = 1, n do out[i] = esc(values[i]) end
  return table.concat(out, ' ')
end

-- The field of an entry of one job: its value as it is (the plain form).
local function only(values)
  return values[1]
end

-- every entry has them, in this order (flush_events's one-row XADD spells it out too)
local ROW_FIELDS = {'job', 'task', 'attempt', 'ts'}
local NONE = {}

-- The cap to send with an entry of n rows: the cap counts rows, and entries
-- of many rows make it fewer entries.
local function cap_for(prefix, n)
  local mean = (rows_per_entry[prefix] or 1) * 0.9 + n * 0.1
  rows_per_entry[prefix] = mean
  if mean > 1.5 then return string.format('%d', math.max(1, math.floor(EVENTS_MAX / mean))) end
  return EVENTS_ARG
end

-- Whether this call has rows to write.
local function events_held()
  return one or #pending > 0
end

-- Forgets the rows of a call that raised before they were written.
local function drop_events()
  one = false
  if #pending > 0 then pending, last_of = {}, {} end
end

local function flush_events()
  if one then
    one = false
    local prefix = one_prefix
    kcall(prefix, 'XADD', prefix .. KEY.events, 'MAXLEN', '~', cap_for(prefix, 1), '*',
      'event', one_event, 'job', one_id, 'task', one_task, 'attempt', one_attempt,
      'ts', one_ts, unpack(one_extra or NONE))
    return
  end
  for _, e in ipairs(pending) do
    local n = e.n
    local args = {'MAXLEN', '~', cap_for(e.prefix, n), '*', 'event', e.event}
    local value = only
    if n > 1 then
      value = column
      args[7], args[8] = 'n', int_s(n)
    end
    for _, name in ipairs(ROW_FIELDS) do
      args[#args + 1] = name
      args[#args + 1] = value(e[name], n)
    end
    for i = 1, e.nx, 2 do
      args[#args + 1] = e.extra[i]
      args[#args + 1] = value(e.extra[i + 1], n)
    end
    kcall(e.prefix, 'XADD', e.prefix .. KEY.events, unpack(args))
  end
  pending, last_of = {}, {}
end
