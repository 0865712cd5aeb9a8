"""The command path to one Redis: few connections, shared by every caller.

Every caller's command goes into one outgoing list; once per pass of the event
loop the list is written to a connection in a single write, and replies are
matched to callers in order as they arrive (see ``aioqueue._redis.link``). So
thousands of concurrent calls share a small, fixed number of connections
(``max_links``) and pay no pool checkout and no write of their own; a caller
never fails for lack of a connection, it waits its turn in the list. A call
made while the lane is idle is written at once, without waiting for the pass.

Calls that would do the same work for many callers can also be merged
(``call_merged``): concurrent enqueues to one queue become one Function call
carrying all their jobs, concurrent watches one watch of many ids.

Deadlines: a call given a ``timeout`` raises ``TimeoutError`` once it passed.
One timer of the lane checks every call waiting (not one timer per call: that
cost about as much as the call itself), so a deadline is kept within a tick.

Failures:

- A connection the server closed fails the calls written to it and not yet
  answered. A caller retries on a fresh connection when its call is
  idempotent (``idempotent=True``, the default); a call that was never written
  is always retried. Other idle connections opened before the loss are closed
  too: a restart or ``CLIENT KILL TYPE normal`` took them as well.
- A connection whose answers are overdue by ``stall_timeout`` (a link dropped
  without a FIN, a stalled proxy) is closed the same way.
- Redis refusing connections: a few attempts with backoff (about 0.1 s), then
  the calls waiting for a connection fail (``RedisUnavailable`` for the
  caller); the next call tries again.

Only non-blocking commands may use a lane: a BLPOP would hold up every caller
behind it.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Hashable
from typing import Any

import hiredis
import structlog
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from aioqueue._redis.link import Link, open_link
from aioqueue._redis.replies import (
    RECONNECT_BASE,
    RECONNECT_CAP,
    Conn,
    Entry,
    Group,
    Lost,
    MergedFailure,
    Started,
    backoff,
    closed_transport,
    expire,
)
from aioqueue._redis.retry import Backoff

__all__ = ["Lane", "MergedFailure", "Started", "closed_transport"]

log = structlog.get_logger("aioqueue.lane")

# a connection carries this many unanswered calls before another one is opened
SPREAD = 256
# at most this many items in one merged call. Redis runs a Function without a
# break, and smaller calls overlap: while Redis runs the second of a pass, the
# callers of the first already prepare their next (500: 30k enqueues/s from 100
# coroutines here; 64: 70k)
MERGE_LIMIT = 64
# connection attempts, with backoff, before the calls waiting for one fail
CONNECT_TRIES = 4
# tries of one call across lost connections (its deadline bounds them too)
MAX_TRIES = 20
TICK = 0.25  # longest time between two looks at deadlines and stalls


class Lane:
    """Pipelined, merged calls over at most ``max_links`` connections to ``redis``."""

    def __init__(
        self, redis: Redis, *, max_links: int = 4, stall_timeout: float | None = 10.0
    ) -> None:
        self._redis = redis
        self.max_links = max(1, max_links)
        self.stall_timeout = stall_timeout
        self._conns: list[Conn] = []
        self._outbox: list[Entry] = []
        self._groups: dict[Hashable, Group] = {}
        self._flush_scheduled = False
        self._connecting: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._tick = TICK
        self._closed = False
        # the loop of the open connections (see _loop)
        self._conn_loop: asyncio.AbstractEventLoop | None = None
        self.last_error = ""  # why the last connection attempt or connection failed
        self.links_opened = 0

    # -- calls ----------------------------------------------------------------------

    async def call(
        self,
        *args: Any,
        idempotent: bool = True,
        timeout: float | None = None,
        sent: list[int] | None = None,
    ) -> Any:
        """Sends one command; its reply (an error reply raises as redis-py would).

        timeout: seconds until ``TimeoutError``, across retries.
        sent: when given, a number is appended each time the command is sent again
        (Redis may have run it before the reply that counted).
        """
        packed = hiredis.pack_command(args)
        loop = self._loop()

        def start(deadline: float) -> asyncio.Future[Any]:
            fut = loop.create_future()
            self._outbox.append((packed, fut, deadline))
            self._schedule()
            return fut

        return await self._send(start, timeout, sent, idempotent)

    async def call_merged(
        self,
        key: Hashable,
        head: tuple[Any, ...],
        item: tuple[Any, ...],
        width: int = 1,
        *,
        timeout: float | None = None,
        sent: list[int] | None = None,
        first: Started | None = None,
    ) -> Any:
        """Sends ``head + item``, merged with the items other callers add under ``key``
        in the same pass of the loop into one ``head + item1 + item2 ...``. The reply
        must be a list of ``width`` elements per item (its own slice comes back; one
        element when width is 1). A failed merged call raises ``MergedFailure``.

        Merging is for idempotent commands only: a lost connection retries the item.
        first: ``start_merged``'s for this item, failed: this call's first try.
        """

        def start(deadline: float) -> asyncio.Future[Any]:
            return self.start_merged(key, head, item, width, deadline=deadline)[0]

        return await self._send(start, timeout, sent, idempotent=True, first=first)

    def start_merged(
        self,
        key: Hashable,
        head: tuple[Any, ...],
        item: tuple[Any, ...],
        width: int = 1,
        *,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> Started:
        """``call_merged``'s first try, queued now: its future and deadline. A caller
        that awaits the future itself skips the frames of the call path (a tenth of a
        concurrent enqueue's CPU); on any failure, ``call_merged(..., first=this)``
        takes that failure as its own first try (then retries, or raises)."""
        # the hottest path of the client: helpers inlined
        if self._closed:
            self._check_open()
        loop = self._conn_loop if self._conns else None
        if loop is None:
            loop = self._loop()
        if deadline is None:
            deadline = self._deadline(loop, timeout)
        fut: asyncio.Future[Any] = loop.create_future()
        group = self._groups.get(key)
        if group is None or len(group.futures) >= MERGE_LIMIT:
            group = self._groups[key] = Group(head, width)
            self._outbox.append(group)
        group.items.append(item)
        group.futures.append(fut)
        group.deadlines.append(deadline)
        if not self._flush_scheduled:
            self._schedule()
        return fut, deadline

    async def _send(
        self,
        start: Callable[[float], asyncio.Future[Any]],
        timeout: float | None,
        sent: list[int] | None,
        idempotent: bool,
        first: Started | None = None,
    ) -> Any:
        """Queues a call (``start`` it, given its deadline) and awaits its reply; a lost
        connection sends it again, at most MAX_TRIES times within the deadline, if it is
        ``idempotent``. first: a first try already queued, and its deadline."""
        loop = self._loop()
        deadline = self._deadline(loop, timeout) if first is None else first[1]
        for attempt in range(MAX_TRIES):
            if attempt and sent is not None:
                sent.append(attempt)
            if attempt or first is None:
                self._check_open()
                fut = start(deadline)
            else:
                fut = first[0]
            try:
                return await fut
            except Lost as lost:
                if not idempotent:
                    raise RedisConnectionError(str(lost)) from None
                await backoff(attempt, deadline)
        raise RedisConnectionError(f"connection lost {MAX_TRIES} times: {self.last_error}")

    def _loop(self) -> asyncio.AbstractEventLoop:
        """The running loop: the one the open connections were made on (they work
        only there), else asked for. ``asyncio.get_running_loop`` makes a getpid
        syscall each time, which cost 8% of a concurrent enqueue's client CPU."""
        if self._conns and self._conn_loop is not None:
            return self._conn_loop
        return asyncio.get_running_loop()

    def _deadline(self, loop: asyncio.AbstractEventLoop, timeout: float | None) -> float:
        if timeout is None:
            return math.inf
        if timeout / 4 < self._tick:
            self._tick = max(0.01, timeout / 4)
        return loop.time() + timeout

    def _check_open(self) -> None:
        if self._closed:
            raise RedisConnectionError("the connection was closed by the client")

    # -- writing ----------------------------------------------------------------------

    def _schedule(self) -> None:
        if self._flush_scheduled:
            return
        self._flush_scheduled = True
        if len(self._outbox) == 1 and self._conns and not self._conns[0].waiting:
            self._flush()  # nothing in flight: no one to wait for, write it now
        else:
            self._loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._closed or not self._outbox:
            return
        conn = self._pick()
        if conn is None or conn.link is None:
            self._reconnect()  # the outbox waits for a connection
            self._arm_timer()
            return
        outbox, self._outbox = self._outbox, []
        self._groups.clear()
        chunks: list[bytes] = []
        waiting = conn.waiting
        was_idle = not waiting
        for entry in outbox:
            if isinstance(entry, Group):
                packed = entry.pack()
                if packed is None:
                    continue
                chunks.append(packed)
                waiting.append(entry)
            else:
                packed, fut, deadline = entry
                if fut.done():
                    continue  # its caller gave up before it was written
                chunks.append(packed)
                waiting.append((fut, deadline))
        if not chunks:
            return
        link = conn.link
        if was_idle:
            link.received_at = link.loop.time()  # the stall clock starts now
        try:
            link.write(chunks)
        except Exception as exc:  # a transport closed under us: uvloop raises
            self._lost(conn, exc)
        self._arm_timer()

    def _pick(self) -> Conn | None:
        best: Conn | None = None
        for conn in self._conns:
            if len(conn.waiting) < SPREAD:
                return conn
            if best is None or len(conn.waiting) < len(best.waiting):
                best = conn
        if len(self._conns) < self.max_links:
            self._reconnect()  # every connection is busy: open one more meanwhile
        return best

    # -- connections -------------------------------------------------------------------

    def _reconnect(self) -> None:
        if self._connecting is None and not self._closed:
            self._connecting = asyncio.get_running_loop().create_task(self._connect_loop())

    async def _connect_loop(self) -> None:
        backoff = Backoff(RECONNECT_BASE, RECONNECT_CAP, jitter=True)
        failures = 0  # in this loop, across successes: CONNECT_TRIES bounds them
        try:
            while self._prune_outbox() and not self._closed:
                if self._conns and (
                    len(self._conns) >= self.max_links
                    or any(len(c.waiting) < SPREAD for c in self._conns)
                ):
                    break
                conn = Conn(self.discard_demoted, self._on_lost)
                try:
                    conn.link = await open_link(self._redis, conn.on_reply, conn.on_lost)
                except (TimeoutError, OSError, RedisConnectionError) as exc:
                    self.last_error = str(exc) or type(exc).__name__
                    if self._conns:
                        break  # the open ones carry the calls
                    failures += 1
                    if failures >= CONNECT_TRIES:
                        # Redis is down, not just this connection: say so now
                        # rather than at each caller's deadline
                        self._fail_outbox(RedisConnectionError(self.last_error))
                        return
                    await backoff.wait()
                    continue
                except Exception as exc:  # AUTH refused and the like: retrying cannot help
                    self.last_error = str(exc)
                    self._fail_outbox(exc)
                    return
                if self._closed:
                    conn.link.close()
                    return
                self._conns.append(conn)
                self._conn_loop = conn.link.loop
                self.links_opened += 1
                backoff.reset()
                self._flush()
        finally:
            self._connecting = None
        if self._outbox and not self._closed:
            self._schedule()

    def _prune_outbox(self) -> bool:
        """Drops calls whose callers gave up while no connection could take them;
        True when some are still waiting."""
        live = [e for e in self._outbox if not (e.done() if isinstance(e, Group) else e[1].done())]
        self._outbox = live
        if not live:
            self._groups.clear()
        return bool(live)

    def _fail_outbox(self, exc: BaseException) -> None:
        outbox, self._outbox = self._outbox, []
        self._groups.clear()
        for entry in outbox:
            if isinstance(entry, Group):
                entry.fail(exc)
            elif not entry[1].done():
                entry[1].set_exception(exc)

    def _on_lost(self, conn: Conn, link: Link, exc: BaseException | None) -> None:
        if conn.link is not link:
            return  # already taken out (closed by us)
        self._lost(conn, exc)
        # whatever closed this one (a restart, CLIENT KILL TYPE normal) most
        # likely closed the idle ones opened before it too: do not hand them out
        for other in list(self._conns):
            if other.link and not other.waiting and other.link.opened_at <= link.opened_at:
                self._lost(other, exc)

    def _lost(self, conn: Conn, exc: BaseException | None) -> None:
        if conn.link is None:
            return
        link, conn.link = conn.link, None
        if conn in self._conns:
            self._conns.remove(conn)
        reason = str(exc) if exc else "Connection closed by server."
        self.last_error = reason
        conn.fail(Lost(reason))
        link.close()  # the connection was made apart from any pool: nothing to hand back
        if self._outbox:
            self._schedule()

    def discard_demoted(self, reply: BaseException) -> None:
        # a primary demoted by a failover: every connection to it is useless
        self.discard_opened_before(asyncio.get_running_loop().time(), reply)

    def discard_opened_before(self, when: float, why: BaseException | None = None) -> int:
        """Closes every connection opened at or before ``when`` (loop time), its
        unanswered calls retried elsewhere: a connection found dead without a FIN
        (or pointing at a demoted primary) says the others of its age are too."""
        closed = 0
        for conn in list(self._conns):
            if conn.link is not None and conn.link.opened_at <= when:
                self._lost(conn, why or RedisConnectionError("a sibling connection went silent"))
                closed += 1
        return closed

    # -- deadlines and stalls ------------------------------------------------------------

    def _arm_timer(self) -> None:
        if self._timer is None and not self._closed:
            tick = self._tick
            if self.stall_timeout is not None:
                tick = min(tick, self.stall_timeout / 2)
            self._timer = self._loop().call_later(tick, self._on_tick)

    def _on_tick(self) -> None:
        self._timer = None
        now = self._loop().time()
        for entry in self._outbox:
            if isinstance(entry, Group):
                entry.expire(now)
            else:
                expire(entry[1], entry[2], now)
        busy = bool(self._outbox)
        for conn in list(self._conns):
            if not conn.waiting or conn.link is None:
                continue
            busy = True
            stall = self.stall_timeout
            if stall is not None and now - conn.link.received_at > stall:
                log.warning("lane.stalled", waited=stall, unanswered=len(conn.waiting))
                self._lost(conn, RedisConnectionError("no reply within the stall timeout"))
                continue
            conn.expire(now)
        if busy:
            self._arm_timer()

    # -- state --------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def connections(self) -> int:
        return len(self._conns)

    async def aclose(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._connecting is not None:
            self._connecting.cancel()
        closed = RedisConnectionError("the connection was closed by the client")
        self._fail_outbox(closed)
        for conn in list(self._conns):
            self._lost(conn, closed)
