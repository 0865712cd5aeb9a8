"""The deadlines of every running job in one heap, behind one loop timer.

``asyncio.timeout`` per job arms and cancels a loop timer of its own (3-5 us on the
project machine, uvloop or not) and, on Python 3.11, asks for the running loop three
times (each a ``getpid`` system call): about a tenth of a no-op job's CPU. Here a job's
deadline is one ``heappush``; the loop timer is armed for the earliest deadline only,
and moved only when a job comes with an earlier one (rare: jobs of one task share a
timeout, so each new deadline is the latest). A job that ends leaves its entry behind,
dropped when it reaches the top or when dead entries outnumber live ones.

``JobTimer`` keeps ``asyncio.Timeout``'s contract: the cancellation it causes becomes
``TimeoutError`` when it leaves the block, a cancellation of the task from elsewhere at
the same time stays a cancellation (``Task.cancelling``/``uncancel``), and
``expired()`` says whether it fired, also when the task swallowed the cancellation.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
from types import TracebackType

__all__ = ["Deadlines", "JobTimer"]

_COMPACT_AT = 64  # entries: below this the heap is never rebuilt
# a loop may run a timer a little before its time (uvloop's clock counts milliseconds):
# deadlines this close count as due, so a timer is never re-armed for a moment's wait
_EARLY = 0.001


class Deadlines:
    """The timers of one event loop's jobs (one per worker run)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._heap: list[tuple[float, int, JobTimer]] = []
        self._seq = itertools.count()
        self._live = 0  # entries of timers still waiting for their deadline
        self._handle: asyncio.TimerHandle | None = None
        self._armed = math.inf  # when the loop timer fires

    def timer(self, timeout: float | None) -> JobTimer:
        """A timer for a block that may run ``timeout`` seconds (None: no limit)."""
        when = None if timeout is None or timeout == math.inf else self.loop.time() + timeout
        return JobTimer(self, when)

    def _add(self, timer: JobTimer, when: float) -> None:
        heap = self._heap
        heapq.heappush(heap, (when, next(self._seq), timer))
        timer._waiting = True
        self._live += 1
        if when < self._armed:
            self._arm(when)
        elif len(heap) > _COMPACT_AT and len(heap) > 2 * self._live:
            # entries of jobs that ended: a no-op job ends long before its deadline
            self._heap = [entry for entry in heap if entry[2]._waiting]
            heapq.heapify(self._heap)

    def _drop(self, timer: JobTimer) -> None:
        """``timer`` no longer waits (it fired or its block was left)."""
        if timer._waiting:
            timer._waiting = False
            self._live -= 1

    def _arm(self, when: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._armed = when
        self._handle = self.loop.call_at(when, self._due)

    def _due(self) -> None:
        self._handle, self._armed = None, math.inf
        heap, now = self._heap, self.loop.time() + _EARLY
        while heap:
            when, _, timer = heap[0]
            if not timer._waiting:
                heapq.heappop(heap)  # its job ended, or it fired by reschedule
            elif when <= now:
                heapq.heappop(heap)
                timer._fire()
            else:
                self._arm(when)
                return


class JobTimer:
    """One job's deadline: ``async with`` around its code, as ``asyncio.timeout``."""

    __slots__ = ("_cancelling", "_deadlines", "_entered", "_fired", "_task", "_waiting", "_when")

    def __init__(self, deadlines: Deadlines, when: float | None) -> None:
        self._deadlines, self._when = deadlines, when
        self._entered = self._fired = self._waiting = False
        self._task: asyncio.Task[object] | None = None
        self._cancelling = 0

    async def __aenter__(self) -> JobTimer:
        if self._entered:
            raise RuntimeError("a JobTimer is entered once")
        deadlines = self._deadlines
        task = asyncio.current_task(deadlines.loop)  # the loop given: no lookup of it
        if task is None:
            raise RuntimeError("a JobTimer must be used inside a task")
        self._task, self._cancelling = task, task.cancelling()
        self._entered = True
        when = self._when
        if when is not None:
            if when <= deadlines.loop.time():
                deadlines.loop.call_soon(self._fire)
            else:
                deadlines._add(self, when)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._deadlines._drop(self)
        task, self._task = self._task, None  # left: a late _fire does nothing
        # uncancel() whenever it fired: the cancel() it made is taken back either way
        if (
            self._fired
            and task is not None
            and task.uncancel() <= self._cancelling
            and exc_type is asyncio.CancelledError
        ):
            raise TimeoutError from exc

    def reschedule(self, when: float) -> None:
        """To now or the past only (all the worker needs): it fires on the next loop
        pass. RuntimeError once it fired or its block was left, as ``asyncio.Timeout``."""
        if self._task is None or self._fired:
            raise RuntimeError("the timer is not running")
        if when > self._deadlines.loop.time():
            raise ValueError("a JobTimer moves only to now")
        self._deadlines.loop.call_soon(self._fire)

    def expired(self) -> bool:
        """Whether it fired (its deadline passed or it was moved to now)."""
        return self._fired

    def _fire(self) -> None:
        task = self._task
        if task is None or self._fired:
            return  # its block was left, or it fired already
        self._deadlines._drop(self)
        self._fired = True
        task.cancel()
