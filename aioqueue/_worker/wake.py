"""Waking an idle worker: at once when a job arrives, and precisely at a due time.

An idle worker blocks with BLPOP on its queues' wake lists, so a new job or an
earlier delayed job wakes it at once. When it must also wake at a due time,
the BLPOP timeout alone is not enough: Redis serves blocking timeouts on its
``hz`` tick (every 100 ms by default), so a 200 ms timeout can end 100 ms
late. The waiter keeps its own timer and, when it fires first, ends the BLPOP
with ``CLIENT UNBLOCK <id> TIMEOUT`` (one extra command per timed wake-up, none
while idle with nothing due). That command goes out on a connection of its own
whose reply is read later, off the path to the claim. Without permission for
CLIENT UNBLOCK (ACLs) it logs once and falls back to the server's timeout.

Durations come from Redis (the claim's ``wait_ms``, on the Redis clock); a
Redis Cluster's queues live in different slots and use ``ClusterWaker``
(``_redis/cluster.py``) instead.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import anyio
import structlog
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoPermissionError, ResponseError

from aioqueue._redis.errors import UNAVAILABLE
from aioqueue._redis.lane import closed_transport

__all__ = ["WakeWaiter"]

log = structlog.get_logger("aioqueue.worker")


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
