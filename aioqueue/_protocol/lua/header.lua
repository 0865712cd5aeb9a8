--[[
Every state change of a job, one function each, so that each change is atomic.

Keys of one queue share the hash tag `{queue}`; KEYS[1] is always the queue's
key prefix (`aq:{name}:`) and the function derives the rest of the queue's keys
from it, so every key touched lives in the same cluster slot.

Why the keys are not each passed in KEYS (FCALL's contract asks for it): the
set a call touches is not known before it runs. claim touches the hash of each
job it pops from `ready`, the lock each of those names, its lock queue; finish
the jobs of a batch and the locks they held; any Function may set a key aside
under a name it makes up (`garbage:<what>:<ms>`). What Redis Cluster needs
KEYS for is the routing, and KEYS[1] gives it: every derived key carries the
same hash tag, so it is in that slot (tests/test_key_slots.py checks every key
a round trip writes). A strict server that refuses undeclared keys (Dragonfly
without `--default_lua_flags=allow-undeclared-keys`) cannot run this library.
Per Function, from KEYS[1] (`j:<id>` a job; + the garbage area, through kcall):
  enqueue      j:<id> ready sched cpu wake meta events stats
  claim        ready cpu sched active j:<id> lock:<n> lockq:<n> wake cwake seq
               claimed:<worker> nudge:<worker> garbage:new events stats
  finish       j:<id> active ready sched dead lock:<n> lockq:<n> wake stats
               tput:<bucket> tpm:<minute> events; PUBLISH to waiting clients
  heartbeat    workers winfo j:<id> active, then as claim's promote and reap
  deregister   workers winfo
  abort        j:<id> sched stats events; PUBLISH on abort
  watch, unwatch  j:<id>
  quarantine   j:<id> active
  requeue, purge  j:<id> dead ready wake events
  cron_define  crondef
  cron_fire    cron crondef lock:<n> j:<id> ready wake stats events
  library_beat, library_users  workers, under a library version's own prefix
               (`aq:library:{<version>}:`, its own slot), not a queue's

A job is a hash at `<prefix>j:<id>`:
  d  payload written by the producer (opaque bytes)
  s  status: queued | scheduled | active | complete | failed | aborted
  a  attempts started so far, l  of those, lost with a dead worker
  k  token of the current delivery (set by claim, checked by every change)
  w  worker holding the current delivery
  q / st / et / due  enqueued, started, ended, due times (ms, Redis clock)
  r  result bytes, e  error bytes
  wt  how many clients wait for the job's end; wt:<client>  one per waiting client
  ab abort requested: the ttl (ms) the aborted job's record gets
  u  lock the job must hold to run: mode ('w' wait | 'd' drop) then lock name

The library is assembled at load from parts (aioqueue/_protocol/lua/*.lua, in
the order of source.py's PARTS) and a prelude generated from the Python side:
ST (job statuses), STATUSES, KEY (what follows the prefix in each key), EV
(event names), CODE (error codes), the payload constants. The Lua spells none
of these itself (tests/test_library_source.py checks), and the version hashes
the whole text, so a change on the Python side is a new library.

Every key a Function touches is read and written through `kcall` or checked
by `read_job` first: nothing stored in Redis can make a Function fail half way
(see the garbage area below).

Time is always Redis server time (TIME), never the caller's clock: due times of
delayed jobs (`delay` is added to TIME here; `at` is an absolute instant),
lease deadlines, cron ticks (`cron_fire` refuses a tick before TIME reaches it)
and the wait a worker is told to block for are all on the one Redis clock, so
workers on hosts whose clocks disagree still fire jobs and ticks exactly once
and on time. Blocking timeouts, though, are served by Redis only on its `hz`
tick (100 ms at the default hz 10), so a worker waiting for a due time keeps
its own timer and ends its BLPOP with CLIENT UNBLOCK (see scheduler.py).

Locks (`u`): a job with a lock runs only while it holds `<prefix>lock:<name>`,
whose value is the holder's id and delivery token. claim takes it atomically
with the delivery; finish releases it; it is live only while that delivery is
active with an unexpired lease, so a dead worker's lock lapses with its lease.
A job that finds the lock taken is dropped (mode 'd') or parked (mode 'w') in
the sched set until the holder's lease deadline, and in `<prefix>lockq:<name>`
from which finish hands the lock to the oldest waiter at once.
]]
