"""Waiting until the live workers' queues are idle, and moving the test clock.

Both ``drain`` and ``clock.advance`` are one drive (timeline.lua): the test
names the queues, the live workers, the target time and the next cron tick in
one call (``aqt_run``), and Redis does the rest. Idle is judged on Redis
alone: no ready job, no delayed job or lease deadline due on the test clock,
no delivery held by a live worker (an outcome not yet written still holds its
delivery). Every production Function of the testing build ends with that
look, so the worker call that leaves the queues idle also steps the clock to
the next thing due and wakes the workers for it; the test waits for one
BLPOP of why the drive stopped (done, a cron tick, a dead-lettered job under
fail_fast), not for each step, and never polls.
"""

from __future__ import annotations

from typing import Any

import anyio
from redis.asyncio import Redis

from aioqueue._protocol.envelope import decode_error
from aioqueue.errors import AioqueueError, JobFailed, JobTimedOut
from aioqueue.testing._build import SETTLED_KEY, timeline_function
from aioqueue.testing._cron import CronGate
from aioqueue.testing._env import Environment

__all__ = ["NotSettled", "drive", "snapshot_dead"]


class NotSettled(AioqueueError, TimeoutError):
    """The queues were still busy when the time allowed to drain them ran out."""


async def snapshot_dead(redis: Redis, env: Environment, prefixes: list[str]) -> None:
    """Jobs dead-lettered before a worker starts are not its failures to raise."""
    for prefix in prefixes:
        if prefix not in env.reported:
            members: list[Any] = await redis.zrange(prefix + "dead", 0, -1)
            env.reported[prefix] = {m.decode() for m in members}


async def drive(
    env: Environment, redis: Redis, target: int | None, *, fail_fast: bool, timeout: float
) -> None:
    """Moves the test clock to ``target`` (None: where it is), through everything
    due on the way, and returns once the queues are idle there.

    fail_fast: raise the exception of the first job dead-lettered meanwhile.
    timeout: NotSettled when the clock has not moved for this many seconds
    while the queues stayed busy (one step did not settle).
    """
    prefixes, ids = env.prefixes(), env.worker_ids()  # none: the clock moves, TTLs end
    gates = env.cron_gates()
    goal = -1 if target is None else target
    try:
        while True:
            dead = await _raise_dead(redis, env, prefixes) if fail_fast else [0] * len(prefixes)
            tick = await _next_tick(gates, timeout)
            reply: bytes = await redis.fcall(
                timeline_function("run"),
                len(prefixes),
                *prefixes,
                goal,
                -1 if tick is None else tick,
                int(fail_fast),
                len(ids),
                *ids,
                *dead,
            )
            why, _, ms = reply.decode().partition(":")
            if why == "busy":
                why, ms = await _settled(redis, prefixes, ids, int(ms), timeout)
            if why == "done":
                return
            if why == "cron":
                for gate in gates:
                    gate.release(int(ms))
            if goal < 0:
                goal = int(ms)  # a drain stays at the instant it began
            # 'dead': raised at the top of the loop
    finally:
        with anyio.CancelScope(shield=True):
            await redis.fcall(timeline_function("stop"), 0)


async def _next_tick(gates: list[CronGate], timeout: float) -> int | None:
    """The next cron tick of a live worker, once each has fired what it was due."""
    try:
        with anyio.fail_after(timeout):
            for gate in gates:
                await gate.parked()
    except TimeoutError:
        raise NotSettled(f"a cron tick did not fire within {timeout}s") from None
    return min((t for g in gates if (t := g.next_tick()) is not None), default=None)


async def _settled(
    redis: Redis, prefixes: list[str], ids: list[str], at: int, timeout: float
) -> tuple[str, str]:
    """Waits for the drive to stop; NotSettled if the clock stays at one time
    for ``timeout`` seconds while the queues are busy."""
    while True:
        popped: Any = await redis.blpop([SETTLED_KEY], timeout=timeout)
        if popped is not None:
            why, _, ms = popped[1].decode().partition(":")
            return why, ms
        out: list[Any] = await redis.fcall(
            timeline_function("idle"), len(prefixes), *prefixes, *ids
        )
        busy, now = out[0].decode(), int(out[-1])
        if now == at:
            raise NotSettled(f"the queues were not idle after {timeout}s: {busy or 'no signal'}")
        at = now  # the clock moved: steps are settling, only many of them


async def _raise_dead(redis: Redis, env: Environment, prefixes: list[str]) -> list[int]:
    """Raises for the first job dead-lettered that no drain raised yet; returns
    the dead-letter count of each queue."""
    counts = []
    for prefix in prefixes:
        reported = env.reported.setdefault(prefix, set())
        members: list[Any] = await redis.zrange(prefix + "dead", 0, -1)  # by time
        new = [m.decode() for m in members if m.decode() not in reported]
        if new:
            reported.add(new[0])
            raise await _failure(redis, env, prefix, new[0])
        counts.append(len(members))
    return counts


async def _failure(redis: Redis, env: Environment, prefix: str, job_id: str) -> BaseException:
    queue = prefix[len("aq:{") : -len("}:")]
    recorded = env.failures.get((queue, job_id))
    if recorded is not None:
        return recorded  # raised with the traceback the task gave it
    # nothing raised in this process (an unknown task, arguments that do not
    # decode, a lost worker): the error the worker stored
    stored: bytes | None = await redis.hget(f"{prefix}j:{job_id}", "e")  # type: ignore[assignment]
    info = decode_error(stored)
    cls: Any = JobTimedOut if info.timed_out else JobFailed
    failure: BaseException = cls(
        job_id=job_id,
        exc_type=info.type,
        exc_message=info.message,
        remote_traceback=info.traceback,
        code=info.code,
    )
    return failure
