"""One run of a worker: made whole by ``Worker.run()``, gone when it returns.

    WorkerRun.run
    ├── pool (process tasks), connections, Scripts        the exit stack, in order
    ├── wait for Redis, start hooks                       before any claim
    ├── service task group                                until the end of the run
    │   ├── OutcomeWriter.run      batched ``finish`` calls
    │   ├── Liveness               heartbeat, abort listener
    │   ├── Dispatch.nudge_loop    (CPU-bound tasks only)
    │   ├── ClusterWaker.run       (Redis Cluster only)
    │   ├── ProcessPool.serve      (process tasks only)
    │   ├── CronRunner             (cron entries only)
    │   └── Fetcher.run            claim, block, hand over
    └── Consumers (the jobs task group)                   Executor.run per delivery

Stopping (``stop()``): fetching stops, deliveries claimed but not started go
back at once, running jobs get ``grace`` seconds, then their timers end them
and they are handed back; outcomes are written; the worker deregisters; stop
hooks run last. A second ``stop()`` ends the running jobs at once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio
import structlog
from anyio.abc import TaskStatus

from aioqueue._hooks import Hooks, fire
from aioqueue._protocol import signing
from aioqueue._protocol.functions import Scripts
from aioqueue._redis.connect import connect_any
from aioqueue._redis.errors import UNAVAILABLE, redact
from aioqueue._redis.retry import Backoff, deadline
from aioqueue._worker.consumers import Consumers
from aioqueue._worker.cron_runner import CronRunner
from aioqueue._worker.deliveries import Deliveries
from aioqueue._worker.dispatch import Dispatch
from aioqueue._worker.executor import Defaults, Executor
from aioqueue._worker.fetch import Fetcher
from aioqueue._worker.joblog import JobLog
from aioqueue._worker.liveness import Liveness
from aioqueue._worker.outcomes import OutcomeWriter
from aioqueue._worker.procpool import ProcessPool
from aioqueue._worker.settings import WorkerSettings
from aioqueue._worker.stats import WorkerStats
from aioqueue._worker.threads import ThreadPool
from aioqueue.cron import CronJob
from aioqueue.middleware import WorkerInfo
from aioqueue.serializers import Serializer
from aioqueue.task import Task

__all__ = ["Hook", "WorkerRun"]

Hook = Callable[[dict[str, Any]], Awaitable[None]]

log = structlog.get_logger("aioqueue.worker")

CONNECT_FIRST, CONNECT_MOST = 0.1, 2.0  # seconds between tries while Redis is not there yet
CHECK_WITHIN = 10.0  # the start-up look at Redis's eviction and persistence settings
LAST_FLUSH_LEAST = 5.0  # the last outcomes get at least this long (else the lease)


class WorkerRun:
    """Every object one run needs, made here at once; ``run`` opens, runs and closes them."""

    def __init__(
        self,
        worker_id: str,
        settings: WorkerSettings,
        tasks: dict[str, Task[Any, Any]],
        *,
        cron: Sequence[CronJob],
        serializer: Serializer,
        signing_key: signing.SigningKeys | None,
        max_error_size: int | None,
        state: dict[str, Any],
        stats: WorkerStats,
        started_at: float,
        on_startup: Sequence[Hook],
        on_shutdown: Sequence[Hook],
        middleware: Sequence[object] = (),
    ) -> None:
        self.worker_id = worker_id
        self.settings = s = settings
        self.stats = stats
        self.state = state
        self._on_startup = list(on_startup)
        self._on_shutdown = list(on_shutdown)
        self.stop_calls = 0
        self.stopping = anyio.Event()
        self.hurry = anyio.Event()
        pooled = [t for t in tasks.values() if t.executor == "process"]
        self.pool = ProcessPool(pooled, s.pool_size, serializer) if pooled else None
        self.redis = connect_any(s.redis_url)
        # blocking and pub/sub reads get connections of their own
        self.block_redis = connect_any(s.redis_url)
        self.sub_redis = connect_any(s.redis_url)
        # its connections are its own
        self.scripts = Scripts(self.redis, events_maxlen=s.events_maxlen)
        self.dispatch = Dispatch(s, tasks)
        self.deliveries = Deliveries(self.dispatch)
        # the worker's own log lines first: every middleware sees what they say
        self.hooks = Hooks([JobLog(), *middleware])
        self.info = WorkerInfo(worker_id, tuple(s.queues), s.concurrency, tuple(tasks))
        self.outcomes = OutcomeWriter(self.scripts, stats, self.hooks)
        self.executor = Executor(
            tasks,
            serializer,
            Defaults(s.job_timeout, s.max_attempts, s.result_ttl),
            worker_id,
            state,
            ThreadPool(s.sync_threads),
            signing_key,
            s.max_result_size,
            max_error_size,
            pool=self.pool,
            hooks=self.hooks,
        )
        self.consumers = Consumers(
            self.executor,
            self.deliveries,
            self.dispatch,
            self.outcomes,
            stats,
            s.concurrency,
            stopping=self.stopping,
            ended=self._ended,
        )
        self.fetcher = Fetcher(
            worker_id,
            s,
            self.scripts,
            self.redis,
            self.block_redis,
            self.dispatch,
            self.deliveries,
            stats,
            deliver=self.consumers.take,
            stop=self.stop,
            stopping=self.stopping,
            done=self.consumers.close,
        )
        self.liveness = Liveness(
            worker_id, s, self.scripts, self.sub_redis, self.deliveries, stats, started_at
        )
        self.cron = (
            CronRunner(cron, self.scripts, serializer, s.queues[0], signing_key) if cron else None
        )
        self._cron_scope = anyio.CancelScope()

    def stop(self) -> None:
        """Drain and exit; a second call ends the running jobs now (their timers)."""
        self.stop_calls += 1
        self.stopping.set()
        if self.stop_calls > 1:
            self.hurry.set()
            # the one instant of a fast stop, not a few loop passes later in the drain
            self.deliveries.stop_all("shutdown")

    def _ended(self) -> None:
        limit = self.settings.max_jobs
        if limit is not None and self.stats.jobs_done >= limit and not self.stop_calls:
            self.stop()

    async def run(self, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        s = self.settings
        async with contextlib.AsyncExitStack() as stack:
            if self.pool is not None:  # first: a task it cannot import fails the start
                await stack.enter_async_context(self.pool)
            for client in (self.redis, self.block_redis, self.sub_redis):
                stack.push_async_callback(client.aclose)
            stack.push_async_callback(self.scripts.aclose)
            await self._connect()
            await self._lifecycle_hooks(stack)
            stack.callback(self.executor.threads.close)
            async with anyio.create_task_group() as service:
                service.start_soon(self.outcomes.run)
                service.start_soon(self.liveness.heartbeat_loop)
                service.start_soon(self.liveness.abort_loop)
                if self.fetcher.cluster_waker is not None:
                    service.start_soon(self.fetcher.cluster_waker.run)
                if self.dispatch.cpu_tasks:
                    service.start_soon(self.dispatch.nudge_loop, self.redis, self.fetcher.nudge)
                if self.pool is not None:
                    service.start_soon(self.pool.serve)
                if self.cron is not None:
                    await service.start(self._run_cron, self.cron)
                async with self.consumers:
                    service.start_soon(self.fetcher.run)
                    log.info(
                        "worker.started",
                        worker=self.worker_id,
                        queues=list(s.queues),
                        concurrency=s.concurrency,
                        redis=redact(s.redis_url),
                        tasks=len(self.executor.tasks),
                    )
                    task_status.started()
                    await self.stopping.wait()
                    # no cron tick fired while draining: it would wait in the ready
                    # list for the next start, even with catch_up off
                    self._cron_scope.cancel()
                    await self.fetcher.stop()
                    await self._drain()
                await self.outcomes.flush_remaining(max(s.lease, LAST_FLUSH_LEAST))
                await self.liveness.deregister()
                service.cancel_scope.cancel()
        log.info("worker.stopped", worker=self.worker_id, jobs_done=self.stats.jobs_done)

    async def _lifecycle_hooks(self, stack: contextlib.AsyncExitStack) -> None:
        """The worker's start and stop hooks: start hooks run here, once Redis answers
        and before the first claim; stop hooks go on the stack, so they run after the
        drain, the last outcomes and the deregistration, even when the run failed."""
        for hook in self._on_startup:
            await hook(self.state)
        stack.push_async_callback(self._shutdown_hooks)
        await fire(self.hooks.on_worker_start, self.info)

    async def _shutdown_hooks(self) -> None:
        with anyio.CancelScope(shield=True):
            await fire(self.hooks.on_worker_stop, self.info)
        for hook in self._on_shutdown:
            with anyio.CancelScope(shield=True):
                await hook(self.state)

    async def _run_cron(
        self, runner: CronRunner, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        with self._cron_scope:
            await runner.run(task_status=task_status)

    async def _drain(self) -> None:
        grace = self.settings.grace
        if len(self.deliveries):
            log.info("worker.draining", running=len(self.deliveries), grace=grace)
            with anyio.move_on_after(grace):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._cancel_on_hurry, tg.cancel_scope)
                    await self.deliveries.all_done()
                    tg.cancel_scope.cancel()
        if len(self.deliveries):
            self.deliveries.stop_all("shutdown")
            await self.deliveries.all_done()

    async def _cancel_on_hurry(self, scope: anyio.CancelScope) -> None:
        await self.hurry.wait()
        scope.cancel()

    async def _connect(self) -> None:
        """Waits for Redis with backoff: a worker started before Redis just waits."""
        backoff = Backoff(CONNECT_FIRST, CONNECT_MOST)
        while True:
            try:
                await self.scripts.load(worker=True)
                await self.scripts.check_layout(self.settings.queues)
                await self._check_redis()
                return
            except UNAVAILABLE as exc:
                log.warning("worker.redis_unavailable", error=str(exc), retry_in=backoff.delay)
                await backoff.wait()

    async def _check_redis(self) -> None:
        """Warns when Redis may lose jobs: eviction allowed, or no persistence."""
        try:
            with deadline(CHECK_WITHIN):
                config = await self.redis.config_get("maxmemory-policy")
                persistence = await self.redis.config_get("appendonly")
                save = await self.redis.config_get("save")
            policy = config.get("maxmemory-policy")
        except Exception:  # CONFIG may be disabled by ACL or a managed service
            return
        if policy and policy != "noeviction":
            log.warning(
                "worker.redis_may_evict",
                policy=policy,
                advice="set maxmemory-policy noeviction: an evicted job is a lost job",
            )
        if persistence.get("appendonly") != "yes" and not save.get("save"):
            log.warning(
                "worker.redis_not_persistent",
                advice="enable AOF (appendonly yes): a Redis restart would lose every job",
            )
