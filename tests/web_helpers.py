"""What the dashboard's tests share: entries of a queue's event stream written as
the workers write them (issue #14's contract), for tests that need an event
without a worker to make it."""

from __future__ import annotations

from typing import Any

from aioqueue._admin.pages import events_key

__all__ = ["emit", "events_key"]


async def emit(redis: Any, queue: str, event: str, job: str, task: str, attempt: int = 0) -> str:
    """XADDs one event the way the Functions do (MAXLEN ~, Redis time)."""
    seconds, micros = await redis.time()
    ts = int(seconds) * 1000 + int(micros) // 1000
    fields = {"event": event, "job": job, "task": task, "attempt": attempt, "ts": ts}
    stream_id = await redis.xadd(events_key(queue), fields, maxlen=10_000, approximate=True)
    return stream_id.decode() if isinstance(stream_id, bytes) else str(stream_id)


# Test data only, not a state change of the library: n dead jobs as the Functions
# leave them (a failed record, an entry in the dead set), 100,000 per call so no
# single script holds Redis for long.
_LOAD_DEAD = """
local prefix, payload, err = KEYS[1], ARGV[1], ARGV[2]
local base, first, last = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local batch = {}
for i = first, last do
  local id = 'dead-' .. i
  redis.call('HSET', prefix .. 'j:' .. id, 's', 'failed', 'd', payload, 'a', 3, 'e', err,
    'et', base + i)
  batch[#batch + 1] = base + i
  batch[#batch + 1] = id
  if #batch >= 2000 then
    redis.call('ZADD', prefix .. 'dead', unpack(batch))
    batch = {}
  end
end
if #batch > 0 then redis.call('ZADD', prefix .. 'dead', unpack(batch)) end
return last - first + 1
"""


async def load_dead(redis: Any, queue: str, n: int, chunk: int = 100_000) -> None:
    """Puts ``n`` dead jobs ``dead-0`` .. ``dead-<n-1>`` (the higher, the newer) in ``queue``."""
    from aioqueue._protocol.envelope import Envelope, ErrorInfo, encode_envelope, encode_error
    from aioqueue._protocol.keys import queue_prefix
    from aioqueue.serializers import get_serializer

    data = get_serializer("msgpack").dumps([["order-1234", {"qty": 2}], {}])
    payload = encode_envelope(Envelope(1, "shop.charge", data))
    error = encode_error(ErrorInfo("shop.PaymentDeclined", "card declined", "Traceback ..."))
    seconds, _ = await redis.time()
    base = (int(seconds) - 86_400) * 1000
    for first in range(0, n, chunk):
        last = min(n, first + chunk) - 1
        await redis.eval(_LOAD_DEAD, 1, queue_prefix(queue), payload, error, base, first, last)


async def command_counts(redis: Any) -> dict[str, int]:
    """Calls per command so far (INFO commandstats), without INFO itself."""
    stats = await redis.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): int(v["calls"])
        for name, v in stats.items()
        if name != "cmdstat_info"
    }


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}
