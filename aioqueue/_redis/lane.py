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

from aioqueue._redis.links import Links
from aioqueue._redis.replies import (
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

__all__ = ["Lane", "MergedFailure", "Started", "closed_transport"]

log = structlog.get_logger("aioqueue.lane")

# at most this many items in one merged call. Redis runs a Function without a
# break, and smaller calls overlap: while Redis runs the second of a pass, the
# callers of the first already prepare their next (500: 30k enqueues/s from 100
# coroutines here; 64: 70k)
MERGE_LIMIT = 64
# tries of one call across lost connections (its deadline bounds them too)
MAX_TRIES = 20
TICK = 0.25  # longest time between two looks at deadlines and stalls


class Lane:
    """Pipelined, merged calls over at most ``max_links`` connections to ``redis``."""

    def __init__(
        self, redis: Redis, *, max_links: int = 4, stall_timeout: float | None = 10.0
    ) -> None:
        self.links = Links(redis, max_links, self)
        self.stall_timeout = stall_timeout
        self._conns: list[Conn] = self.links.conns  # the same list, read on the hot path
        self._outbox: list[Entry] = []
        self._groups: dict[Hashable, Group] = {}
        self._flush_scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        self._tick = TICK
        self._closed = False

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
        loop = self.links.loop if self._conns else None
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
        if self._conns and self.links.loop is not None:
            return self.links.loop
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
        conn = self.links.pick()
        if conn is None or conn.link is None:
            self.links.reconnect()  # the outbox waits for a connection
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
            self.links.lost(conn, exc)
        self._arm_timer()

    # -- what the links ask of the calls (links.Calls) ---------------------------------

    def calls_waiting(self) -> bool:
        """Drops calls whose callers gave up while no connection could take them;
        True when some are still waiting."""
        live = [e for e in self._outbox if not (e.done() if isinstance(e, Group) else e[1].done())]
        self._outbox = live
        if not live:
            self._groups.clear()
        return bool(live)

    def fail_calls(self, exc: BaseException) -> None:
        outbox, self._outbox = self._outbox, []
        self._groups.clear()
        for entry in outbox:
            if isinstance(entry, Group):
                entry.fail(exc)
            elif not entry[1].done():
                entry[1].set_exception(exc)

    def write_calls(self) -> None:
        self._flush()

    def calls_lost(self) -> None:
        if self._outbox:
            self._schedule()

    def discard_opened_before(self, when: float, why: BaseException | None = None) -> int:
        """See ``Links.discard_opened_before``."""
        return self.links.discard_opened_before(when, why)

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
                self.links.lost(conn, RedisConnectionError("no reply within the stall timeout"))
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

    @property
    def max_links(self) -> int:
        return self.links.max_links

    @property
    def links_opened(self) -> int:
        return self.links.opened

    @property
    def last_error(self) -> str:
        """Why the last connection attempt or connection failed."""
        return self.links.last_error

    async def aclose(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.fail_calls(RedisConnectionError("the connection was closed by the client"))
        await self.links.aclose()
