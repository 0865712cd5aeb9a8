"""``async with run_worker(worker) as w:`` a real worker in the test's event loop.

For the length of the block the worker runs against the test's private Redis
(its ``redis_url`` is pointed there and put back after), with two changes that
make it testable, none of them in the worker itself:

- its tasks run wrapped, so that the exception an attempt raised is kept
  (``drain(fail_fast=True)`` raises it with its own traceback);
- its cron entries are fired by the test clock at their ticks instead of by a
  timer of the worker (``clock.advance`` steps to each tick), through the same
  ``cron_fire`` Function and payloads as production.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio

from aioqueue._protocol.functions import TESTING_CLOCK, Scripts
from aioqueue._protocol.keys import QueueKeys
from aioqueue._worker.cron_runner import CronRunner
from aioqueue._worker.worker import Worker
from aioqueue.context import current_job
from aioqueue.cron import CronJob
from aioqueue.task import Task
from aioqueue.testing._env import Environment, current
from aioqueue.testing._settle import Settler, snapshot_dead

__all__ = ["RunningWorker", "run_worker"]


class RunningWorker:
    """The handle ``run_worker`` yields.

    Attributes:
        worker: the ``Worker`` running in the test's event loop.
    """

    def __init__(self, worker: Worker, env: Environment, cron: list[CronJob]) -> None:
        self.worker = worker
        self._env = env
        self._cron = cron
        self._redis = env.connect()
        self._runner = CronRunner(
            cron,
            Scripts(self._redis, events_maxlen=worker.settings.events_maxlen),
            worker.serializer,
            worker.queues[0],
            worker.signing_key,
        )
        self._next_tick = {entry.name: entry.next_after(env.now_ms) for entry in cron}

    async def drain(self, *, fail_fast: bool = False, timeout: float = 30.0) -> None:
        """Returns when the live workers' queues are idle: no ready job, no job
        running, no delayed job due on the test clock. fail_fast: raise the
        exception of the first job that failed for good (dead-lettered), with
        the traceback its task raised it with. Raises ``NotSettled`` after
        ``timeout`` seconds."""
        async with Settler(self._env, self._redis) as settler:
            await settler.wait(fail_fast=fail_fast, timeout=timeout)

    def _next_cron_tick(self) -> int | None:
        """The earliest cron tick still to fire (test-clock ms), None without cron."""
        return min(self._next_tick.values(), default=None)

    async def _fire_cron(self, now_ms: int) -> int:
        """Fires, in order, every tick at or before ``now_ms`` (the clock steps to each);
        returns how many enqueued a job (a tick skipped by no_overlap enqueues none)."""
        due = sorted(
            (self._next_tick[e.name], i, e)
            for i, e in enumerate(self._cron)
            if self._next_tick[e.name] <= now_ms
        )
        fired = 0
        for tick, _, entry in due:
            # the worker's own path (CronRunner._fire): the cron_fire Function, its payload
            status, _ = await self._runner._fire(entry, tick)
            fired += status == "fired"
            self._next_tick[entry.name] = entry.next_after(tick)
        return fired

    async def _catch_up(self) -> None:
        """What a starting worker does for ``catch_up=True``: the latest missed tick."""
        for entry in self._cron:
            if not entry.catch_up:
                continue
            raw = await self._redis.hget(
                QueueKeys(entry.queue(self.worker.queues[0])).cron, entry.name
            )
            missed = entry.latest_at_or_before(self._env.now_ms)
            if raw is not None and missed > int(raw):
                await self._runner._fire(entry, missed)

    async def _close(self) -> None:
        await self._redis.aclose()


def _recording(t: Task[Any, Any], failures: dict[tuple[str, str], BaseException]) -> Task[Any, Any]:
    """A copy of ``t`` whose function keeps the exception an attempt raises."""
    fn = t.fn
    if fn is None or getattr(t, "executor", None) == "process":
        return t  # runs elsewhere: its failure is raised from what the worker stored

    def record(exc: BaseException) -> None:
        if not isinstance(exc, anyio.get_cancelled_exc_class()):
            ctx = current_job()
            failures[(ctx.queue, ctx.job_id)] = exc

    wrapped: Any
    if t.is_async:

        @functools.wraps(fn)
        async def wrapped(*args: Any, **kwargs: Any) -> Any:
            try:
                return await fn(*args, **kwargs)
            except BaseException as exc:
                record(exc)
                raise

    else:

        @functools.wraps(fn)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except BaseException as exc:
                record(exc)
                raise

    clone: Task[Any, Any] = Task.__new__(Task)
    for slot in Task.__slots__:
        setattr(clone, slot, getattr(t, slot))
    clone.fn = wrapped
    return clone


@asynccontextmanager
async def run_worker(worker: Worker) -> AsyncIterator[RunningWorker]:
    """Runs ``worker`` in this event loop on the test's private Redis for the block.

    Needs the plugin's ``aioqueue_redis_url`` fixture (directly or through
    ``aioqueue_queue`` / ``aioqueue_clock``). On leaving the block the worker
    stops at once: jobs still running are cancelled and handed back.
    """
    env = current()
    saved = (worker.redis_url, worker.tasks, worker.cron)
    worker.configure(redis_url=env.url)
    worker.tasks = {name: _recording(t, env.failures) for name, t in worker.tasks.items()}
    worker.cron = []  # fired by the test clock (RunningWorker._fire_cron)
    running = RunningWorker(worker, env, saved[2])
    try:
        await snapshot_dead(running._redis, env, [QueueKeys(q).prefix for q in worker.queues])
        async with anyio.create_task_group() as tg:
            allowed = TESTING_CLOCK.set(True)  # only in the worker's own context
            try:
                await tg.start(worker.run)
            finally:
                TESTING_CLOCK.reset(allowed)
            env.workers.append(running)
            try:
                await running._catch_up()
                yield running
            finally:
                env.workers.remove(running)
                worker.stop()
                worker.stop()  # no grace: the test is over
    finally:
        worker.configure(redis_url=saved[0])
        worker.tasks, worker.cron = saved[1], saved[2]
        await running._close()
