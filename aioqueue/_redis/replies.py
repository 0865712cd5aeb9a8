"""What waits for Redis's replies on a lane: a caller's future with its deadline, or a
merged group whose one reply is split among its callers; and one connection of the lane
with the calls written to it, in reply order (see ``aioqueue._redis.lane``)."""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Callable
from typing import Any

import hiredis
from redis.exceptions import BusyLoadingError, ReadOnlyError

from aioqueue._redis.link import Link

__all__ = [
    "Conn",
    "Entry",
    "Group",
    "Lost",
    "MergedFailure",
    "Started",
    "Waiter",
    "backoff",
    "closed_transport",
    "expire",
]

RECONNECT_BASE = 0.01
RECONNECT_CAP = 0.5


def closed_transport(exc: BaseException) -> bool:
    """uvloop refuses a write to a transport closed under it with a RuntimeError
    (asyncio's own loop drops the write); either way the link is gone."""
    return isinstance(exc, RuntimeError) and "handler is closed" in str(exc)


class Lost(Exception):
    """The call got no answer it can use: its connection went away after it was
    written, or Redis was still loading its data. Retried if the caller allows."""


class MergedFailure(Exception):
    """A merged call failed as a whole; ``error`` is Redis's reply.

    Each caller may retry its own item alone: the failure may not be its own.
    """

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def expire(fut: asyncio.Future[Any], deadline: float, now: float) -> None:
    if deadline <= now and not fut.done():
        fut.set_exception(TimeoutError())


class Group:
    """Items of one merged call: one command, one reply split among the callers."""

    __slots__ = ("deadlines", "futures", "head", "items", "width")

    def __init__(self, head: tuple[Any, ...], width: int) -> None:
        self.head = head
        self.width = width
        self.items: list[tuple[Any, ...]] = []
        self.futures: list[asyncio.Future[Any]] = []
        self.deadlines: list[float] = []

    def pack(self) -> bytes | None:
        """The merged command of the items whose callers still wait (None: none do)."""
        args = list(self.head)
        futures = self.futures
        if not any(fut.done() for fut in futures):  # the common case: everyone waits
            for item in self.items:
                args.extend(item)
            packed: bytes = hiredis.pack_command(tuple(args))
            return packed
        kept, deadlines = [], []
        for item, fut, deadline in zip(self.items, futures, self.deadlines, strict=True):
            if not fut.done():
                args.extend(item)
                kept.append(fut)
                deadlines.append(deadline)
        self.futures, self.deadlines = kept, deadlines
        return hiredis.pack_command(tuple(args)) if kept else None

    def deliver(self, reply: Any) -> None:
        futures = self.futures
        if isinstance(reply, Exception):
            for fut in futures:
                if not fut.done():
                    fut.set_exception(MergedFailure(reply) if len(futures) > 1 else reply)
            return
        w = self.width
        for i, fut in enumerate(futures):
            if not fut.done():
                fut.set_result(reply[i] if w == 1 else reply[i * w : (i + 1) * w])

    def fail(self, exc: BaseException) -> None:
        for fut in self.futures:
            if not fut.done():
                fut.set_exception(exc)

    def expire(self, now: float) -> None:
        for fut, deadline in zip(self.futures, self.deadlines, strict=True):
            expire(fut, deadline, now)

    def done(self) -> bool:
        return all(f.done() for f in self.futures)


# what waits for one reply: a caller's future and its deadline, or a merged group
Waiter = tuple[asyncio.Future[Any], float] | Group
Entry = tuple[bytes, asyncio.Future[Any], float] | Group  # in the outbox
Started = tuple[asyncio.Future[Any], float]  # a merged item queued: its future, deadline


async def backoff(attempt: int, deadline: float) -> None:
    """The first retry goes at once (a killed connection: a fresh one answers),
    later ones back off (Redis restarting or still loading), within the deadline."""
    loop = asyncio.get_running_loop()
    if loop.time() >= deadline:
        raise TimeoutError
    if attempt:
        delay = random.uniform(0, min(RECONNECT_CAP, RECONNECT_BASE * 2**attempt))
        if loop.time() + delay >= deadline:
            raise TimeoutError
        await asyncio.sleep(delay)


class Conn:
    """One connection of a lane and the calls written to it, in reply order.

    demoted(reply): the server answered READONLY (a primary demoted by a failover);
    lost(conn, link, exc): the link is gone. Both are the lane's.
    """

    __slots__ = ("_demoted", "_lost", "link", "waiting")

    def __init__(
        self,
        demoted: Callable[[BaseException], None],
        lost: Callable[[Conn, Link, BaseException | None], None],
    ) -> None:
        self._demoted = demoted
        self._lost = lost
        self.link: Link | None = None
        self.waiting: deque[Waiter] = deque()

    def on_reply(self, reply: Any) -> None:
        waiter = self.waiting.popleft()
        if isinstance(reply, Exception):
            if isinstance(reply, ReadOnlyError):
                # nothing was written: the call waits for a connection to the new primary
                self.waiting.appendleft(waiter)
                self._demoted(reply)
                return
            if isinstance(reply, BusyLoadingError):
                reply = Lost(str(reply))  # restarted, still reading its data: later
        if isinstance(waiter, Group):
            waiter.deliver(reply)
            return
        fut = waiter[0]
        if not fut.done():
            if isinstance(reply, Exception):
                fut.set_exception(reply)
            else:
                fut.set_result(reply)

    def on_lost(self, link: Link, exc: BaseException | None) -> None:
        self._lost(self, link, exc)

    def fail(self, exc: BaseException) -> None:
        waiting, self.waiting = self.waiting, deque()
        for waiter in waiting:
            if isinstance(waiter, Group):
                waiter.fail(exc)
            elif not waiter[0].done():
                waiter[0].set_exception(exc)

    def expire(self, now: float) -> None:
        """Fails the calls written here whose deadline passed."""
        for waiter in self.waiting:
            if isinstance(waiter, Group):
                waiter.expire(now)
            else:
                expire(waiter[0], waiter[1], now)
