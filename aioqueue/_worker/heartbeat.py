"""Heartbeats on a fixed schedule, and soon again after a failed one.

A lease is extended only by a heartbeat that reaches Redis. Sleeping a full
interval after each beat, however long the beat took, lost leases in a Redis
stall: a beat sent into it waited out its call timeout (10 s) and failed, the
next went out a whole interval after that, and an 11 s stall expired 30 s
leases, so their jobs ran twice. Here beats start every ``interval`` (start to
start), and a failed one is tried again after a short backoff, so a beat is
waiting at Redis when it answers again: a stall shorter than
``lease - interval`` never lets a lease of a live worker expire.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
import structlog

from aioqueue._redis.retry import Backoff, deadline

__all__ = ["on_schedule"]

log = structlog.get_logger("aioqueue.worker")

RETRY_FIRST = 0.05  # seconds before the first retry of a failed beat
RETRY_MOST = 2.0
# a beat stuck on a link that answers nothing is given up after this long (at
# least a second: a busy Redis may take a while) and sent again on a new one
SHORTEST_DEADLINE = 1.0


async def on_schedule(
    beat: Callable[[], Awaitable[None]],
    interval: float,
    failed: Callable[[Exception, float], None],
) -> None:
    """Runs ``beat`` every ``interval`` seconds for ever. A failure is handed to
    ``failed`` (with the seconds until the retry), never raised: a beat that got no
    answer in time as ``RedisUnavailable``."""
    within = max(interval, SHORTEST_DEADLINE)
    # retries never wait longer than an interval: the next beat is due by then anyway
    backoff = Backoff(RETRY_FIRST, min(interval, RETRY_MOST))
    due = anyio.current_time()
    while True:
        wait = due - anyio.current_time()
        if wait > 0:
            await anyio.sleep(wait)
        started = anyio.current_time()
        try:
            with deadline(within):
                await beat()
        except Exception as exc:  # Redis away or stalled, an error reply: the loop goes on
            failed(exc, backoff.delay)
            due = anyio.current_time() + next(backoff)
            continue
        if backoff.failures:
            log.info("worker.heartbeat_recovered", failures=backoff.failures)
        backoff.reset()
        due = started + interval
