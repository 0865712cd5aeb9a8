"""A lean path to one Redis for the Function calls on the hot path.

redis-py's client layer costs about as much per command as Redis takes to run
an enqueue: a pool lock and bookkeeping around every command, a retry wrapper,
observability hooks and command packing in pure Python. A ``Lane`` keeps the
connections it takes from the client's pool instead of handing them back after
each call, packs commands with hiredis (C), and talks to the connection
directly: one write, one read. The connection objects, their parser (reply
errors become the same redis-py exceptions) and Sentinel's primary discovery
are redis-py's own; only the per-command wrapper is skipped.

A connection whose call did not end cleanly (cancelled, timed out, dropped)
is closed rather than reused: it may still owe a reply.
"""

from __future__ import annotations

import random
from typing import Any

import anyio
import hiredis
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["Lane", "closed_transport"]

# A dropped link is retried like redis-py's default policy: 3 more tries with
# jittered exponential backoff (the caller's deadline bounds the whole call).
RETRIES = 3
BACKOFF_BASE = 0.008
BACKOFF_CAP = 0.5
_RETRYABLE = (RedisConnectionError, RedisTimeoutError, OSError)


def closed_transport(exc: BaseException) -> bool:
    """uvloop refuses a write to a transport closed under it with a RuntimeError
    (asyncio's own loop drops the write); either way the link is gone."""
    return isinstance(exc, RuntimeError) and "handler is closed" in str(exc)


class Lane:
    """Sends commands over connections held out of ``redis``'s pool."""

    def __init__(self, redis: Redis) -> None:
        self._pool = redis.connection_pool
        self._idle: list[AbstractConnection] = []

    async def call(self, *args: Any) -> Any:
        packed = hiredis.pack_command(args)
        for attempt in range(RETRIES + 1):
            conn = self._idle.pop() if self._idle else await self._connect()
            try:
                await conn.send_packed_command(packed, check_health=False)
                reply = await conn.read_response()
            except ResponseError:
                self._idle.append(conn)  # a refusal: the link itself is fine
                raise
            except BaseException as exc:
                await self._drop(conn)  # cancelled, timed out or dropped: it may owe a reply
                closed = closed_transport(exc)
                if not (closed or isinstance(exc, _RETRYABLE)):
                    raise
                if attempt == RETRIES:
                    if closed:
                        raise RedisConnectionError(str(exc)) from exc
                    raise
                await anyio.sleep(random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt)))
                continue
            self._idle.append(conn)
            return reply
        raise AssertionError("unreachable")  # pragma: no cover

    async def _connect(self) -> AbstractConnection:
        conn: AbstractConnection = await self._pool.get_connection()  # type: ignore[no-untyped-call]
        return conn

    async def _drop(self, conn: AbstractConnection) -> None:
        # shielded: a cancelled caller must still close the link it leaves half-read
        with anyio.CancelScope(shield=True):
            await conn.disconnect(nowait=True)
            await self._pool.release(conn)
