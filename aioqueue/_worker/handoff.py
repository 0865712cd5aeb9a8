"""Claimed deliveries on their way to the worker's consumers, with as few wake-ups as the jobs need.

An anyio memory stream hands each item to a waiting receiver, which wakes one
consumer task per job. For jobs that end without waiting (no-ops, short
CPU work) those task switches cost more than the jobs. Here a new batch wakes
one idle consumer; a consumer that takes a job while more are queued wakes the
next. Jobs that wait on I/O get a consumer each, as before; jobs that do not
are run back to back by the consumers already awake.

The fetcher claims no more than the run has room for (``Dispatch.capacity``), so
the queue of items itself needs no bound.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

import anyio

__all__ = ["Handoff"]

T = TypeVar("T")


class Handoff(Generic[T]):
    """One producer, many consumers; ``close`` ends it once the items run out."""

    def __init__(self) -> None:
        self._items: deque[T] = deque()
        self._idle: deque[asyncio.Future[None]] = deque()
        self._waking = 0  # consumers woken that have not looked at the items yet
        self._closed = False

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: T) -> None:
        if self._closed:
            raise anyio.ClosedResourceError
        self._items.append(item)
        self._wake_if_waiting()

    def close(self) -> None:
        """No more items: consumers take what is left, then get ``EndOfStream``."""
        self._closed = True
        while self._wake_one():
            pass

    def get_nowait(self) -> T:
        """The next item; ``WouldBlock`` when none is queued, ``EndOfStream`` once closed."""
        if self._items:
            item = self._items.popleft()
            self._wake_if_waiting()  # more queued: another consumer may run one of them
            return item
        if self._closed:
            raise anyio.EndOfStream
        raise anyio.WouldBlock

    async def get(self) -> T:
        while True:
            try:
                return self.get_nowait()
            except anyio.WouldBlock:
                pass
            woken = asyncio.get_running_loop().create_future()
            self._idle.append(woken)
            try:
                await woken
            except BaseException:
                if woken.done() and not woken.cancelled():
                    # woken and cancelled in the same pass: pass the wake-up on
                    self._waking -= 1
                    self._wake_if_waiting()
                else:
                    woken.cancel()  # stays in _idle, skipped by _wake_one
                raise
            self._waking -= 1

    def _wake_if_waiting(self) -> None:
        """Items wait and no woken consumer is on its way to them: wake one."""
        if self._items and not self._waking:
            self._wake_one()

    def _wake_one(self) -> bool:
        while self._idle:
            woken = self._idle.popleft()
            if not woken.done():
                woken.set_result(None)
                self._waking += 1
                return True
        return False
