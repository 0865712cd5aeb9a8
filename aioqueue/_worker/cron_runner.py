"""Cron in the worker: firing the ticks of its recurring jobs.

All scheduling is on the Redis server's clock (``TIME``): the Lua library stores
due times, lease deadlines and cron ticks in Redis ms, and tells a worker how
long to wait. This module only turns those Redis-clock durations into local
sleeps; it never compares the host's wall clock with a stored time (nor does
``wake.py``, which wakes an idle worker at a job's due time).

``CronRunner``: one task per recurring job sleeps until its next tick (by the
Redis clock, estimated locally from the last Redis time seen and the monotonic
clock) and calls ``cron_fire``, which fires the tick exactly once across all
workers and refuses a tick the Redis clock has not reached yet.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextvars import ContextVar

import anyio
import structlog
from anyio.abc import TaskStatus
from redis.exceptions import ResponseError

from aioqueue._protocol import signing
from aioqueue._protocol.envelope import ENVELOPE_VERSION, Envelope, encode_envelope
from aioqueue._protocol.functions import Scripts
from aioqueue._protocol.keys import QueueKeys
from aioqueue._redis.connect import RedisClient
from aioqueue._redis.errors import UNAVAILABLE
from aioqueue._redis.retry import Backoff
from aioqueue.cron import CronJob
from aioqueue.errors import RedisOutOfMemory
from aioqueue.serializers import Serializer

__all__ = ["CRON_CLOCK", "CronRunner", "ServerClock"]

log = structlog.get_logger("aioqueue.scheduler")


class ServerClock:
    """The Redis clock, estimated from the last Redis time seen plus local elapsed time."""

    def __init__(self) -> None:
        self._server_ms = 0
        self._at = time.monotonic()

    def set(self, server_ms: int) -> None:
        self._server_ms = server_ms
        self._at = time.monotonic()

    def now_ms(self) -> int:
        return self._server_ms + int((time.monotonic() - self._at) * 1000)

    async def sync(self, redis: RedisClient) -> int:
        seconds, micros = await redis.time()
        self.set(seconds * 1000 + micros // 1000)
        return self._server_ms

    async def sleep_until(self, tick: int) -> None:
        """Returns once the Redis clock has reached ``tick`` (by this estimate)."""
        delay = (tick - self.now_ms()) / 1000
        if delay > 0:
            await anyio.sleep(delay)


# The seam for aioqueue.testing: when set (only in the context of a worker that
# aioqueue.testing.run_worker starts), it makes each CronRunner's clock, so that
# ticks come when the test clock reaches them instead of after a sleep. The
# runner is otherwise the production one: its schedule, catch-up and cron_fire.
CRON_CLOCK: ContextVar[Callable[[CronRunner], ServerClock] | None] = ContextVar(
    "aioqueue_cron_clock", default=None
)


class CronRunner:
    """Fires the ticks of a worker's recurring jobs (see ``aioqueue.cron``)."""

    def __init__(
        self,
        entries: Sequence[CronJob],
        scripts: Scripts,
        serializer: Serializer,
        default_queue: str,
        signing_key: signing.SigningKeys | None = None,
    ) -> None:
        self.entries = list(entries)
        self.scripts = scripts
        self.default_queue = default_queue
        make_clock = CRON_CLOCK.get()
        self.clock = make_clock(self) if make_clock is not None else ServerClock()
        # arguments are fixed per entry: encode each payload once (signed per tick: the
        # signature covers the tick's job id)
        self._payloads = {e.name: self._payload(e, serializer) for e in self.entries}
        self._signer = signing.Signer(signing_key) if signing_key is not None else None
        self._superseded: set[str] = set()  # names another worker redefined: logged once

    @staticmethod
    def _payload(entry: CronJob, serializer: Serializer) -> bytes:
        opts = entry.task.defaults
        data = serializer.dumps([list(entry.call.args), entry.call.kwargs])
        envelope = Envelope(
            ENVELOPE_VERSION,
            entry.task.name,
            data,
            opts.timeout,
            opts.max_attempts,
            opts.result_ttl,
        )
        return encode_envelope(envelope)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """``started()`` once each job has made its start-up decision (catch-up or skip)."""
        async with anyio.create_task_group() as tg:
            for entry in self.entries:
                await tg.start(self._loop, entry)
            task_status.started()

    async def _loop(
        self, entry: CronJob, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        started = False
        tick: int | None = None
        backoff = Backoff(0.1, 5.0)
        while True:
            try:
                if tick is None:
                    tick = await self._first_tick(entry)
                if not started:
                    task_status.started()
                    started = True
                await self.clock.sleep_until(tick)
                status, ms = await self._fire(entry, tick)
                if status == "early":  # this host's timer ran ahead of the Redis clock
                    await anyio.sleep(ms / 1000)
                    continue
                tick = self._following(entry, tick, ms)
                backoff.reset()
            except RedisOutOfMemory:
                # new work is refused; running jobs go on finishing. This tick is lost:
                # firing it late, once memory is back, would run it at a time nobody chose
                reason = "Redis out of memory"
                log.warning("cron.skipped", cron=entry.name, tick=tick, reason=reason)
                if tick is not None:
                    tick = self._following(entry, tick, self.clock.now_ms())
            except Exception as exc:  # Redis away, an error reply: logged, backed off, never fatal
                event = "cron.redis_unavailable" if isinstance(exc, UNAVAILABLE) else "cron.failed"
                log.warning(event, cron=entry.name, error=str(exc), retry_in=backoff.delay)
                if not started:
                    task_status.started()
                    started = True
                await backoff.wait()

    async def _first_tick(self, entry: CronJob) -> int:
        now = await self.clock.sync(self.scripts.redis)
        await self._define(entry)
        if entry.catch_up:
            keys = QueueKeys(entry.queue(self.default_queue))
            try:
                raw = await self.scripts.redis.hget(keys.cron, entry.name)
            except ResponseError:  # not a hash: cron_fire sets it aside
                raw = None
            if raw is not None and raw.isdigit():  # garbage: cron_fire sets it aside
                missed = entry.latest_at_or_before(now)
                if missed > int(raw):
                    status, _ = await self._fire(entry, missed)
                    log.info("cron.caught_up", cron=entry.name, tick=missed, status=status)
        return entry.next_after(now)

    async def _define(self, entry: CronJob) -> None:
        """Registers this worker's schedule for the name; the newest definition wins."""
        queue = entry.queue(self.default_queue)
        try:
            previous = await self.scripts.cron_define(queue, entry.name, entry.definition)
        except RedisOutOfMemory:
            return  # the first tick fired registers it, if none is
        if previous is not None and previous != entry.definition:
            log.warning(
                "cron.redefined",
                cron=entry.name,
                schedule=entry.definition,
                previous=previous,
                advice="workers still running the previous schedule stop firing this name",
            )

    def _following(self, entry: CronJob, tick: int, now: int) -> int:
        nxt = entry.next_after(tick)
        if nxt > now:
            return nxt
        # this loop fell behind (blocked loop, Redis away): the ticks in between
        # are coalesced into the latest one, which fires at once
        latest = entry.latest_at_or_before(now)
        log.warning("cron.behind", cron=entry.name, skipped_from=nxt, firing=latest)
        return latest

    async def _fire(self, entry: CronJob, tick: int) -> tuple[str, int]:
        queue, job_id, lock = entry.queue(self.default_queue), entry.job_id(tick), entry.lock_wire()
        payload = self._payloads[entry.name]
        if self._signer is not None:  # signed like a producer's: a signing worker runs no other
            payload = self._signer.sign(payload, queue=queue, job_id=job_id, lock=lock)
        status, ms = await self.scripts.cron_fire(
            queue, entry.name, tick, job_id, payload, lock, entry.definition
        )
        if status == "early":
            return status, ms
        self.clock.set(ms)
        if status == "fired":
            log.info("cron.fired", cron=entry.name, job_id=entry.job_id(tick), late_ms=ms - tick)
        elif status == "overlap":
            log.info("cron.skipped", cron=entry.name, tick=tick, reason="previous run still going")
        elif status == "superseded" and entry.name not in self._superseded:
            self._superseded.add(entry.name)
            log.warning(
                "cron.superseded",
                cron=entry.name,
                schedule=entry.definition,
                reason="a worker started since with another schedule for this name",
            )
        return status, ms
