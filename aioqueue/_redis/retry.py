"""How a loop waits between tries, and how long a call to Redis may take.

``Backoff``: every loop that meets an unreachable Redis (or a refused reply, a
failed fork) waits before its next try, longer after each failure in a row, up
to a cap, and starts again from the first delay after a success. Each loop
chooses its numbers: a worker's claim retries after 50 ms because a job may be
waiting, a cron timer after 100 ms because its tick is seconds away.

``deadline``: a call that gets no answer in time is Redis being unavailable,
whatever the reason (a stalled link, a Redis busy in a script), and says so in
the one error callers already handle.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import anyio

from aioqueue._redis.errors import no_answer

__all__ = ["Backoff", "deadline"]


class Backoff:
    """Delays that double from ``start`` up to ``cap``; ``jitter`` spreads each
    over its upper half, so that clients cut off together do not come back together.

    ``delay`` is the next wait (what a log line calls ``retry_in``); ``wait()``
    sleeps it, ``next()`` takes it without sleeping, ``reset()`` after a success.
    """

    __slots__ = ("_base", "cap", "delay", "failures", "jitter", "start")

    def __init__(self, start: float, cap: float, *, jitter: bool = False) -> None:
        self.start = start
        self.cap = cap
        self.jitter = jitter
        self.failures = 0  # waits since the last reset
        self._base = start
        self.delay = self._spread(start)

    def _spread(self, base: float) -> float:
        return random.uniform(base / 2, base) if self.jitter else base

    def __iter__(self) -> Iterator[float]:
        return self

    def __next__(self) -> float:
        delay = self.delay
        self.failures += 1
        self._base = min(self._base * 2, self.cap)
        self.delay = self._spread(self._base)
        return delay

    async def wait(self) -> None:
        await anyio.sleep(next(self))

    def reset(self) -> None:
        if self.failures:
            self.failures = 0
            self._base = self.start
            self.delay = self._spread(self.start)


@contextlib.contextmanager
def deadline(seconds: float, what: str = "Redis") -> Iterator[anyio.CancelScope]:
    """Bounds the block to ``seconds``; past them the block is cancelled and
    ``RedisUnavailable("<what> did not answer within <seconds>s")`` raised.

    A cancel scope, like every deadline of the library outside a job's own
    timer (see docs/architecture.md, "Concurrency model"). A ``TimeoutError``
    raised by the block itself passes through as it is.
    """
    with anyio.CancelScope(deadline=anyio.current_time() + seconds) as scope:
        yield scope
    if scope.cancelled_caught and anyio.current_time() >= scope.deadline:
        raise no_answer(what, seconds)
