"""``async with run_worker(worker) as w:`` a real worker in the test's event loop.

For the length of the block the worker runs against the test's private Redis
(its ``redis_url`` is pointed there and put back after), with two changes that
make it testable, none of them in the worker itself:

- its tasks run wrapped, so that the exception an attempt raised is kept
  (``drain(fail_fast=True)`` raises it with its own traceback);
- its cron runner waits for the test clock instead of sleeping: each tick
  fires when ``clock.advance`` reaches it (_cron.py), through the runner's
  own ``cron_fire`` call, catch-up and schedule.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio

from aioqueue._protocol.functions import TESTING_CLOCK
from aioqueue._protocol.keys import QueueKeys
from aioqueue._worker.cron_runner import CRON_CLOCK
from aioqueue._worker.worker import Worker
from aioqueue.context import current_job
from aioqueue.task import Task
from aioqueue.testing._cron import CronGate
from aioqueue.testing._env import Environment, current
from aioqueue.testing._settle import drive, snapshot_dead

__all__ = ["RunningWorker", "run_worker"]


class RunningWorker:
    """The handle ``run_worker`` yields.

    Attributes:
        worker: the ``Worker`` running in the test's event loop.
    """

    def __init__(self, worker: Worker, env: Environment) -> None:
        self.worker = worker
        self._env = env
        self._redis = env.connect()
        self._gates: list[CronGate] = []  # its CronRunner's clock, once the run made it

    @property
    def _cron_gates(self) -> list[CronGate]:
        return self._gates

    async def drain(self, *, fail_fast: bool = False, timeout: float = 30.0) -> None:
        """Returns when the live workers' queues are idle: no ready job, no job
        running, no delayed job due on the test clock. fail_fast: raise the
        exception of the first job that failed for good (dead-lettered), with
        the traceback its task raised it with. Raises ``NotSettled`` after
        ``timeout`` seconds."""
        await drive(self._env, self._redis, None, fail_fast=fail_fast, timeout=timeout)

    async def _close(self) -> None:
        await self._redis.aclose()


def _recording(t: Task[Any, Any], failures: dict[tuple[str, str], BaseException]) -> Task[Any, Any]:
    """A copy of ``t`` whose function keeps the exception an attempt raises."""
    fn = t.fn
    if fn is None or getattr(t, "executor", None) == "process":
        return t  # runs elsewhere: its failure is raised from what the worker stored

    def record(exc: BaseException) -> None:
        # asyncio's, not anyio.get_cancelled_exc_class(): a def task runs in a worker
        # thread, where there is no event loop to ask
        if not isinstance(exc, asyncio.CancelledError):
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
    saved = (worker.redis_url, worker.tasks)
    worker.configure(redis_url=env.url)
    worker.tasks = {name: _recording(t, env.failures) for name, t in worker.tasks.items()}
    running = RunningWorker(worker, env)
    try:
        await snapshot_dead(running._redis, env, [QueueKeys(q).prefix for q in worker.queues])
        async with anyio.create_task_group() as tg:
            # both only in the worker's own context (tg.start copies it)
            allowed = TESTING_CLOCK.set(True)
            gated = CRON_CLOCK.set(CronGate.maker(running._gates))
            try:
                await tg.start(worker.run)
            finally:
                CRON_CLOCK.reset(gated)
                TESTING_CLOCK.reset(allowed)
            env.workers.append(running)
            try:
                yield running
            finally:
                env.workers.remove(running)
                worker.stop()
                worker.stop()  # no grace: the test is over
    finally:
        worker.configure(redis_url=saved[0])
        worker.tasks = saved[1]
        await running._close()
