"""The connections of one lane (``aioqueue._redis.lane``): which one takes the next
write, opening more while calls wait, and closing those a loss says are dead too.

The lane owns the calls; this owns the links. What a connection event means for
the calls (write the waiting ones, fail them, send them again) the lane decides,
through the four methods of ``Calls``.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from aioqueue._redis.link import Link, open_link
from aioqueue._redis.replies import RECONNECT_BASE, RECONNECT_CAP, Conn, Lost
from aioqueue._redis.retry import Backoff

__all__ = ["CONNECT_TRIES", "SPREAD", "Calls", "Links"]

# a connection carries this many unanswered calls before another one is opened
SPREAD = 256
# connection attempts, with backoff, before the calls waiting for one fail
CONNECT_TRIES = 4


class Calls(Protocol):
    """What the links ask of the lane whose calls they carry."""

    def calls_waiting(self) -> bool:
        """Drops the calls whose callers gave up; True when some still wait."""

    def fail_calls(self, exc: BaseException) -> None:
        """Fails every call still waiting for a connection."""

    def write_calls(self) -> None:
        """Writes the waiting calls now (a connection just opened)."""

    def calls_lost(self) -> None:
        """A connection went: calls still waiting need another."""


class Links:
    """At most ``max_links`` connections to ``redis``, opened as calls need them."""

    def __init__(self, redis: Redis, max_links: int, calls: Calls) -> None:
        self._redis = redis
        self.max_links = max(1, max_links)
        self._calls = calls
        # changed in place only: the lane reads this same list on its hot path
        self.conns: list[Conn] = []
        self._connecting: asyncio.Task[None] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None  # the open connections' loop
        self.closed = False
        self.last_error = ""  # why the last connection attempt or connection failed
        self.opened = 0

    def pick(self) -> Conn | None:
        best: Conn | None = None
        for conn in self.conns:
            if len(conn.waiting) < SPREAD:
                return conn
            if best is None or len(conn.waiting) < len(best.waiting):
                best = conn
        if len(self.conns) < self.max_links:
            self.reconnect()  # every connection is busy: open one more meanwhile
        return best

    def reconnect(self) -> None:
        if self._connecting is None and not self.closed:
            self._connecting = asyncio.get_running_loop().create_task(self._connect_loop())

    async def _connect_loop(self) -> None:
        backoff = Backoff(RECONNECT_BASE, RECONNECT_CAP, jitter=True)
        failures = 0  # in this loop, across successes: CONNECT_TRIES bounds them
        try:
            while self._calls.calls_waiting() and not self.closed:
                if self.conns and (
                    len(self.conns) >= self.max_links
                    or any(len(c.waiting) < SPREAD for c in self.conns)
                ):
                    break
                conn = Conn(self.discard_demoted, self._on_lost)
                try:
                    conn.link = await open_link(self._redis, conn.on_reply, conn.on_lost)
                except (TimeoutError, OSError, RedisConnectionError) as exc:
                    self.last_error = str(exc) or type(exc).__name__
                    if self.conns:
                        break  # the open ones carry the calls
                    failures += 1
                    if failures >= CONNECT_TRIES:
                        # Redis is down, not just this connection: say so now
                        # rather than at each caller's deadline
                        self._calls.fail_calls(RedisConnectionError(self.last_error))
                        return
                    await backoff.wait()
                    continue
                except Exception as exc:  # AUTH refused and the like: retrying cannot help
                    self.last_error = str(exc)
                    self._calls.fail_calls(exc)
                    return
                if self.closed:
                    conn.link.close()
                    return
                self.conns.append(conn)
                self.loop = conn.link.loop
                self.opened += 1
                backoff.reset()
                self._calls.write_calls()
        finally:
            self._connecting = None
        if not self.closed:
            self._calls.calls_lost()  # calls queued meanwhile still need a write

    def _on_lost(self, conn: Conn, link: Link, exc: BaseException | None) -> None:
        if conn.link is not link:
            return  # already taken out (closed by us)
        self.lost(conn, exc)
        # whatever closed this one (a restart, CLIENT KILL TYPE normal) most
        # likely closed the idle ones opened before it too: do not hand them out
        for other in list(self.conns):
            if other.link and not other.waiting and other.link.opened_at <= link.opened_at:
                self.lost(other, exc)

    def lost(self, conn: Conn, exc: BaseException | None) -> None:
        if conn.link is None:
            return
        link, conn.link = conn.link, None
        if conn in self.conns:
            self.conns.remove(conn)
        reason = str(exc) if exc else "Connection closed by server."
        self.last_error = reason
        conn.fail(Lost(reason))
        link.close()  # the connection was made apart from any pool: nothing to hand back
        self._calls.calls_lost()

    def discard_demoted(self, reply: BaseException) -> None:
        # a primary demoted by a failover: every connection to it is useless
        self.discard_opened_before(asyncio.get_running_loop().time(), reply)

    def discard_opened_before(self, when: float, why: BaseException | None = None) -> int:
        """Closes every connection opened at or before ``when`` (loop time), its
        unanswered calls retried elsewhere: a connection found dead without a FIN
        (or pointing at a demoted primary) says the others of its age are too."""
        closed = 0
        for conn in list(self.conns):
            if conn.link is not None and conn.link.opened_at <= when:
                self.lost(conn, why or RedisConnectionError("a sibling connection went silent"))
                closed += 1
        return closed

    async def aclose(self) -> None:
        self.closed = True
        if self._connecting is not None:
            self._connecting.cancel()
        closed = RedisConnectionError("the connection was closed by the client")
        for conn in list(self.conns):
            self.lost(conn, closed)
