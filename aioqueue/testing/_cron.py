"""A worker's cron under run_worker: its own CronRunner, on the test clock.

``run_worker`` sets ``CRON_CLOCK`` (aioqueue/_worker/cron_runner.py) in the
worker's context, so the worker's ``CronRunner`` gets a ``CronGate`` for its
clock instead of the Redis-clock estimate. Everything else is the production
runner: it defines its schedules, makes its catch-up decision, and fires each
tick through ``cron_fire``. Only its wait changes: each entry's loop parks at
its next tick until the test clock gets there (``release``), and the clock
waits until every loop has fired and parked again (``parked``) before it goes
on, so the ticks of several days fire one by one, in order, in one advance.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio
from redis.exceptions import ResponseError

from aioqueue._redis.connect import RedisClient
from aioqueue._worker.cron_runner import CronRunner, ServerClock
from aioqueue.testing._build import CLOCK_KEY

__all__ = ["CronGate"]


class CronGate(ServerClock):
    """The clock of one worker's CronRunner while ``run_worker`` runs it."""

    def __init__(self, loops: int) -> None:
        super().__init__()
        self._loops = loops  # one per cron entry (CronRunner._loop)
        self._now = 0
        self._parked: list[tuple[int, anyio.Event]] = []
        self._all_parked = anyio.Event()

    @classmethod
    def maker(cls, made: list[CronGate]) -> Callable[[CronRunner], ServerClock]:
        """The CRON_CLOCK factory: each gate made is appended to ``made``."""

        def make(runner: CronRunner) -> ServerClock:
            gate = cls(len(runner.entries))
            made.append(gate)
            return gate

        return make

    # ServerClock: the test clock stands still between releases

    def set(self, server_ms: int) -> None:
        self._now = max(self._now, server_ms)

    def now_ms(self) -> int:
        return self._now

    async def sync(self, redis: RedisClient) -> int:
        try:
            raw = await redis.get(CLOCK_KEY)
        except ResponseError:
            raw = None
        if raw is not None:
            self.set(int(raw) // 1000)
            return self._now
        return await super().sync(redis)  # no test clock: run_worker is not in charge here

    async def sleep_until(self, tick: int) -> None:
        if tick <= self._now:
            return  # due: fire now (a loop that backed off after a failed fire)
        released = anyio.Event()
        entry = (tick, released)
        self._parked.append(entry)
        if len(self._parked) >= self._loops:
            self._all_parked.set()
        try:
            await released.wait()
        finally:
            if entry in self._parked:  # cancelled while parked: the worker is stopping
                self._parked.remove(entry)

    # the test clock's side

    async def parked(self) -> None:
        """Returns once every entry's loop waits for its next tick."""
        while len(self._parked) < self._loops:
            await self._all_parked.wait()

    def next_tick(self) -> int | None:
        return min((tick for tick, _ in self._parked), default=None)

    def release(self, now_ms: int) -> None:
        """The test clock reads now_ms: the loops whose tick it reached fire."""
        self._now = max(self._now, now_ms)
        due = [entry for entry in self._parked if entry[0] <= self._now]
        if due:
            self._parked = [entry for entry in self._parked if entry[0] > self._now]
            self._all_parked = anyio.Event()
            for _, released in due:
                released.set()
