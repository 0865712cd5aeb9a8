"""Time in the worker: waking at due times, and firing cron ticks.

All scheduling is on the Redis server's clock (``TIME``): the Lua library stores
due times, lease deadlines and cron ticks in Redis ms, and tells a worker how
long to wait. This module only turns those Redis-clock durations into local
sleeps; it never compares the host's wall clock with a stored time.

``WakeWaiter``: an idle worker blocks with BLPOP on its queues' wake lists, so
a new job or an earlier delayed job wakes it at once. When it must also wake at
a due time, the BLPOP timeout alone is not enough: Redis serves blocking
timeouts on its ``hz`` tick (every 100 ms by default), so a 200 ms timeout can
end 100 ms late. The waiter keeps its own timer and, when it fires first, ends
the BLPOP with ``CLIENT UNBLOCK <id> TIMEOUT`` (one extra command per timed
wake-up, none while idle with nothing due). That command goes out on a
connection of its own whose reply is read later, off the path to the claim.
Without permission for CLIENT UNBLOCK (ACLs) it logs once and falls back to
the server's timeout.

``CronRunner``: one task per recurring job sleeps until its next tick (by the
Redis clock, estimated locally from the last Redis time seen and the monotonic
clock) and calls ``cron_fire``, which fires the tick exactly once across all
workers and refuses a tick the Redis clock has not reached yet.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import anyio
import structlog
from anyio.abc import TaskStatus
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoPermissionError, ResponseError

from aioqueue._protocol import signing
from aioqueue._protocol.envelope import ENVELOPE_VERSION, Envelope, encode_envelope
from aioqueue._protocol.functions import Scripts
from aioqueue._protocol.keys import QueueKeys
from aioqueue._redis.connect import RedisClient
from aioqueue._redis.errors import UNAVAILABLE
from aioqueue._redis.lane import closed_transport
from aioqueue._redis.retry import Backoff
from aioqueue.cron import CronJob
from aioqueue.errors import RedisOutOfMemory
from aioqueue.serializers import Serializer

__all__ = ["CronRunner", "ServerClock", "WakeWaiter"]

log = structlog.get_logger("aioqueue.scheduler")


class WakeWaiter:
    """Blocks on wake lists until a signal, or precisely until a due time.

    At a due time the waiter returns as soon as its own timer fires, so the
    worker's claim goes out at once; CLIENT UNBLOCK ends the BLPOP in Redis in
    parallel, and its reply (nil, or a wake signal that came first) is read at
    the start of the next wait.
    """

    # The BLPOP of a timed wait asks Redis for this much longer than the local
    # timer: a reply by then can only be the server's own timeout, never ours.
    SERVER_SLACK = 5.0

    def __init__(self, block_redis: Redis, control: Redis, idle_wait: float) -> None:
        self._pool = block_redis.connection_pool
        self._control = control
        self._idle_wait = idle_wait
        self._conn: AbstractConnection | None = None
        self._client_id: int | None = None
        self._pending = False  # a BLPOP unblocked but its reply not read yet
        self._can_unblock = True
        self._unblocker: AbstractConnection | None = None
        self._unread = 0  # CLIENT UNBLOCK replies not read yet

    async def wait(self, keys: Sequence[str], wait_ms: float) -> None:
        """wait_ms: Redis-clock ms until something is due; -1 when nothing is."""
        conn = await self._connection()
        if self._pending:
            self._pending = False
            signalled = await self._read(conn, None) is not None
            await self._read_unblock_replies()
            if signalled:
                return  # the wake signal came just before the unblock: go and claim
        timeout = self._idle_wait if wait_ms < 0 else min(wait_ms / 1000, self._idle_wait)
        timeout = max(timeout, 0.001)
        # Only a due time needs precision; an idle look every idle_wait does not.
        if not (0 <= wait_ms < self._idle_wait * 1000 and self._can_unblock):
            await self._send(conn, "BLPOP", *keys, timeout)
            await self._read(conn, None)
            return
        await self._send(conn, "BLPOP", *keys, timeout + self.SERVER_SLACK)
        began = time.monotonic()
        if await self._read(conn, timeout) is not None:
            return  # signalled
        if time.monotonic() - began >= timeout + self.SERVER_SLACK / 2:
            return  # a stalled loop read the server's own timeout: nothing pending
        self._pending = True
        await self._unblock()

    async def _connection(self) -> AbstractConnection:
        # One connection of our own, so that we know its id for CLIENT UNBLOCK.
        if self._conn is None:
            self._conn = await self._pool.get_connection()  # type: ignore[no-untyped-call]
        if self._client_id is None or not self._conn.is_connected:
            self._pending = False
            await self._conn.connect()
            await self._conn.send_command("CLIENT", "ID")
            self._client_id = int(await self._conn.read_response())
            await self._check_unblock(self._client_id)
        return self._conn

    async def _check_unblock(self, client_id: int) -> None:
        # Asked up front: learning it from a first timed wait would leave that
        # BLPOP blocked SERVER_SLACK seconds longer than asked.
        # On the connection that will send them, so that it is ready by then.
        try:
            if self._unblocker is None:
                pool = self._control.connection_pool
                self._unblocker = await pool.get_connection()  # type: ignore[no-untyped-call]
            await self._read_unblock_replies()
            await self._unblocker.send_command("CLIENT", "UNBLOCK", client_id)
            await self._unblocker.read_response()  # not blocked: 0, if allowed
        except NoPermissionError as exc:
            self._no_unblock(exc)
        except ResponseError:
            pass  # BUSY and the like say "not now", not "never": asked again on a new link

    def _no_unblock(self, exc: ResponseError) -> None:
        if self._can_unblock:
            log.warning(
                "worker.no_client_unblock",
                error=str(exc),
                advice="allow CLIENT UNBLOCK: without it delayed jobs fire on Redis's hz tick",
            )
        self._can_unblock = False

    async def _send(self, conn: AbstractConnection, *args: object) -> None:
        try:
            await conn.send_command(*args)
        except BaseException as exc:
            await self._lost(conn)
            if closed_transport(exc):
                raise RedisConnectionError(str(exc)) from exc
            raise

    async def _read(self, conn: AbstractConnection, timeout: float | None) -> object:
        """The reply; None also when ``timeout`` passed first (the reply then stays
        to be read: redis-py keeps the connection for a read with a timeout)."""
        try:
            return await conn.read_response(timeout=timeout)
        except BaseException:
            await self._lost(conn)
            raise

    async def _lost(self, conn: AbstractConnection) -> None:
        # a reply half read or still to come: this connection cannot be reused
        self._client_id = None
        self._pending = False
        with anyio.CancelScope(shield=True):
            await conn.disconnect()

    async def _unblock(self) -> None:
        # shielded: a command cut half way would leave the connection unusable
        with anyio.CancelScope(shield=True):
            try:
                if self._unblocker is None:
                    pool = self._control.connection_pool
                    self._unblocker = await pool.get_connection()  # type: ignore[no-untyped-call]
                if not self._unblocker.is_connected:
                    self._unread = 0
                # the reply is read at the next wait, off the path to the claim
                await self._unblocker.send_command("CLIENT", "UNBLOCK", self._client_id, "TIMEOUT")
                self._unread += 1
            except UNAVAILABLE:
                await self._drop_unblocker()

    async def _read_unblock_replies(self) -> None:
        if self._unblocker is None:
            return
        try:
            while self._unread:
                try:
                    await self._unblocker.read_response()  # 1, or 0: it had returned already
                except NoPermissionError as exc:
                    self._no_unblock(exc)
                except ResponseError:
                    pass  # BUSY and the like: that one unblock was refused, not all
                self._unread -= 1
        except BaseException:
            # a reply half read: start over on a fresh connection
            with anyio.CancelScope(shield=True):
                await self._drop_unblocker()
            raise

    async def _drop_unblocker(self) -> None:
        self._unread = 0
        if self._unblocker is not None:
            await self._unblocker.disconnect()


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
        self.clock = ServerClock()
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
                delay = (tick - self.clock.now_ms()) / 1000
                if delay > 0:
                    await anyio.sleep(delay)
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
