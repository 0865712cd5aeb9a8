"""The test clock: time stands still until a test moves it.

All times in aioqueue are read inside the Functions (delays, retry backoffs,
lease deadlines, cron ticks, the waits workers are told), and the testing build
reads them from this clock (prelude.lua). ``advance`` moves it like time would
pass, one event at a time: it steps to the earliest thing that comes due in
the window (a delayed job or retry, a lease deadline, a TTL, a cron tick of a
live worker), wakes the workers, waits until they are idle again, and goes on
to the next, so that what a job does when it runs (a retry, a child job) lands
in the window in its place. The steps are taken inside Redis, by the worker
call that leaves the queues idle (_settle.py, timeline.lua); nothing sleeps.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from aioqueue.errors import ConfigurationError
from aioqueue.testing._env import Environment
from aioqueue.testing._settle import drive

__all__ = ["TestClock"]


class TestClock:
    """The ``aioqueue_clock`` fixture."""

    __test__ = False  # a pytest collection hint: not a test class

    def __init__(self, env: Environment) -> None:
        self._env = env

    @property
    def ms(self) -> int:
        """The test clock's time: Unix milliseconds."""
        return self._env.now_ms

    def now(self) -> datetime:
        """The test clock's time (UTC)."""
        return datetime.fromtimestamp(self._env.now_ms / 1000, UTC)

    async def advance(
        self,
        delta: timedelta | None = None,
        *,
        days: float = 0,
        hours: float = 0,
        minutes: float = 0,
        seconds: float = 0,
        milliseconds: float = 0,
        fail_fast: bool = False,
        timeout: float = 30.0,
    ) -> None:
        """Lets this much time pass; everything due in it runs, in order.

        Jobs running when it is called finish first. fail_fast and timeout as
        for ``RunningWorker.drain`` (timeout: for each step to settle: it is
        ``NotSettled`` when the clock stays at one time that long).
        """
        step = (delta or timedelta()) + timedelta(
            days=days, hours=hours, minutes=minutes, seconds=seconds, milliseconds=milliseconds
        )
        if step < timedelta():
            raise ConfigurationError(f"the test clock only moves forward, not by {step}")
        await self._run_to(
            self._env.now_ms + round(step / timedelta(milliseconds=1)), fail_fast, timeout
        )

    async def advance_to(
        self, when: datetime, *, fail_fast: bool = False, timeout: float = 30.0
    ) -> None:
        """Like ``advance``, up to the instant ``when`` (timezone-aware)."""
        if when.tzinfo is None:
            raise ConfigurationError("advance_to needs a timezone-aware datetime")
        target = round(when.timestamp() * 1000)
        if target < self._env.now_ms:
            raise ConfigurationError(f"the test clock only moves forward; it reads {self.now()}")
        await self._run_to(target, fail_fast, timeout)

    async def _run_to(self, target: int, fail_fast: bool, timeout: float) -> None:
        redis = self._env.connect()
        try:
            await drive(self._env, redis, target, fail_fast=fail_fast, timeout=timeout)
        finally:
            await redis.aclose()
