"""The threads that run ``def`` tasks: at most ``size``, counting abandoned ones.

A thread cannot be cancelled. When a ``def`` task's job times out (or is
aborted, or lost) the job moves on at once, but its thread runs on until the
function returns. A limiter handed back when the job gives up (as anyio's is)
lets the next job start one more thread, so stuck functions piled up threads
without bound (533 with ``sync_threads=4``). Here a thread is free again only
when its function has really returned: a job that finds every thread taken
waits for one, within its own timeout.

The threads are daemons: a function stuck for good must not keep the worker
process alive after the worker stopped.
"""

from __future__ import annotations

import asyncio
import contextvars
import queue
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["ThreadPool"]

T = TypeVar("T")


class _Call:
    __slots__ = ("abandoned", "context", "fn", "future", "loop")

    def __init__(
        self, fn: Callable[[], Any], future: asyncio.Future[Any], loop: asyncio.AbstractEventLoop
    ) -> None:
        self.fn = fn
        self.future = future
        self.loop = loop
        self.context = contextvars.copy_context()  # current_job() works in the thread
        self.abandoned = False


class ThreadPool:
    """Runs functions in at most ``size`` threads of its own, started on demand."""

    def __init__(self, size: int, name: str = "aioqueue-sync") -> None:
        self.size = size
        self.name = name
        self.busy = 0  # threads running a function, abandoned or not
        self.abandoned = 0  # of those, functions whose job gave up waiting for them
        self._idle: list[queue.SimpleQueue[_Call | None]] = []
        self._started = 0
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._closed = False

    async def run(self, fn: Callable[[], T]) -> T:
        """``fn()`` in a thread; cancelling the caller abandons the thread, never frees it."""
        inbox = await self._take()
        loop = asyncio.get_running_loop()
        call = _Call(fn, loop.create_future(), loop)
        inbox.put(call)
        try:
            return await asyncio.shield(call.future)
        except asyncio.CancelledError:
            if not call.future.done():
                call.abandoned = True
                self.abandoned += 1
            raise

    async def _take(self) -> queue.SimpleQueue[_Call | None]:
        while not self._idle and self._started >= self.size:
            waiter = asyncio.get_running_loop().create_future()
            self._waiting.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake_next()  # woken and cancelled at once: pass the turn on
                raise
            finally:
                if waiter in self._waiting:
                    self._waiting.remove(waiter)
        self.busy += 1
        if self._idle:
            return self._idle.pop()
        self._started += 1
        inbox: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        thread = threading.Thread(
            target=self._serve, args=(inbox,), name=f"{self.name}-{self._started}", daemon=True
        )
        thread.start()
        return inbox

    def _serve(self, inbox: queue.SimpleQueue[_Call | None]) -> None:
        while (call := inbox.get()) is not None:
            try:
                result = call.context.run(call.fn)
            except BaseException as exc:  # handed to the job, whatever it is
                self._report(call, inbox, None, exc)
            else:
                self._report(call, inbox, result, None)
            del call

    def _report(
        self,
        call: _Call,
        inbox: queue.SimpleQueue[_Call | None],
        result: object,
        exc: BaseException | None,
    ) -> None:
        try:
            call.loop.call_soon_threadsafe(self._done, call, inbox, result, exc)
        except RuntimeError:  # the loop is closed: the worker is gone
            inbox.put(None)

    def _done(
        self,
        call: _Call,
        inbox: queue.SimpleQueue[_Call | None],
        result: object,
        exc: BaseException | None,
    ) -> None:
        if call.abandoned:
            self.abandoned -= 1  # nobody awaits its result any more: dropped
        elif not call.future.done():
            if exc is None:
                call.future.set_result(result)
            else:
                call.future.set_exception(exc)
        self.busy -= 1
        if self._closed:
            inbox.put(None)
            return
        self._idle.append(inbox)
        self._wake_next()

    def _wake_next(self) -> None:
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def close(self) -> None:
        """Ends the idle threads; busy ones end when their function returns."""
        self._closed = True
        while self._idle:
            self._idle.pop().put(None)
