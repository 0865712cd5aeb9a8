"""The worker: one event loop running many jobs at once.

    fetch ──(bounded stream)──> consumers (≤ concurrency tasks) ──> outcomes ──> flush
      │  claims only as many jobs as it has free slots, CPU-bound ones only
      │  into free CPU slots (fair dispatch, dispatch.py)
      └─ blocks on the queues' wake lists when idle (BLPOP), never polls

    Consumers are long-lived tasks started on demand up to ``concurrency``: a
    task per job costs several times more than handing a job to a waiting one.

    heartbeat: extends the leases of running jobs, registers the worker, reaps
    leases of dead workers. aborts: a pub/sub listener cancels aborted jobs.
    cron: fires the ticks of the worker's recurring jobs (scheduler.py).

Stopping (``stop()``, or SIGTERM/SIGINT when ``handle_signals``): fetching stops,
jobs claimed but not started go back at once, running jobs get ``grace`` seconds,
then are cancelled and handed back; outcomes are flushed; the worker deregisters.
A second stop request skips what is left of the grace period.

Settings live in one frozen ``WorkerSettings`` (settings.py); ``configure``
replaces it before a run, never during one.

Burst mode (``burst=True``) stops the worker by itself once a claim finds no
ready job and none of its own jobs runs: the queues are drained. Jobs scheduled
for later (delays, retry backoffs) stay for the next run.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, ParamSpec, TypeVar

import anyio
import anyio.lowlevel
import msgspec
import structlog
from anyio.abc import TaskStatus
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from aioqueue._protocol import signing
from aioqueue._protocol.functions import Claimed, Scripts
from aioqueue._protocol.garbage import abort_target
from aioqueue._protocol.keys import QueueKeys
from aioqueue._redis.cluster import ClusterClient, ClusterWaker, any_node_pubsub
from aioqueue._redis.connect import DEFAULT_URL, RedisClient, connect_any
from aioqueue._redis.errors import UNAVAILABLE, redact
from aioqueue._worker.cron_runner import CronRunner, WakeWaiter
from aioqueue._worker.dispatch import Dispatch
from aioqueue._worker.executor import RELEASE, Defaults, Executor, Outcome, Running
from aioqueue._worker.failures import DEFAULT_MAX_ERROR_SIZE, check_max_error_size
from aioqueue._worker.handoff import Handoff
from aioqueue._worker.heartbeat import on_schedule
from aioqueue._worker.outcomes import OutcomeWriter
from aioqueue._worker.procpool import ProcessPool
from aioqueue._worker.settings import SettingsView, WorkerSettings
from aioqueue._worker.threads import ThreadPool
from aioqueue.cron import CronJob
from aioqueue.errors import ConfigurationError
from aioqueue.serializers import Serializer, get_serializer
from aioqueue.task import DEFAULT_QUEUE, Task, task

__all__ = ["Worker"]

P = ParamSpec("P")
R = TypeVar("R")
Hook = Callable[[dict[str, Any]], Awaitable[None]]

log = structlog.get_logger("aioqueue.worker")

IDLE_WAIT = 5.0  # longest a worker blocks without a look at its queues
MAX_BACKOFF = 2.0  # longest wait between reconnect attempts: back within 2 s of Redis
REGISTRY_TTL = 60.0
# outcomes written per finish call: a few ms of Redis time at most, however
# many piled up while Redis was slow or away (one unbounded call would stall it)
FINISH_BATCH = 256


class Worker(SettingsView):
    """Runs the jobs of ``queues`` (in priority order) with ``tasks``.

    Build it in a module and run it with ``aioqueue run module:worker``, or in your
    own event loop with ``await worker.run()`` (``stop()`` ends it). Idle, it blocks
    on Redis (at most ``IDLE_WAIT`` = 5 s between two looks at its queues, one claim
    each), so an idle worker sends well under one command a second.

    Args:
        tasks: the tasks it runs (more with ``register`` or the ``task`` decorator).
        redis_url: the Redis to use (``aioqueue run --redis-url`` or
            ``AIOQUEUE_REDIS_URL`` override it).
        queues: the queues to serve, highest priority first.
        concurrency: most jobs running at once.
        lease: seconds a delivery is held without a heartbeat before another worker
            may take it (at-least-once: a dead worker's jobs run again after it).
        heartbeat: seconds between heartbeats, shorter than the lease
            (default ``lease / 3``).
        grace: seconds running jobs get to finish when the worker stops.
        serializer: as the producers' ``Queue`` (default ``"msgpack"``).
        job_timeout: default seconds an attempt may run (a task's ``timeout`` wins).
        max_attempts: default attempts of a job (a task's ``max_attempts`` wins).
        result_ttl: default seconds a result is kept (a task's ``result_ttl`` wins).
        sync_threads: threads for plain ``def`` tasks.
        on_startup: async hooks ``hook(state)`` run before the first claim; they
            may put shared objects (an HTTP client) in ``state``.
        on_shutdown: async hooks ``hook(state)`` run after the last job.
        max_jobs: stop after this many jobs (a supervisor then starts a fresh process).
        prefetch: I/O-bound deliveries claimed ahead of a free slot while jobs are
            short (default: concurrency, 0 for concurrency 1); they go back at once
            when the worker stops.
        max_result_size: largest encoded result in bytes (a larger one fails the job).
        max_error_size: largest error record (message and traceback) in bytes, cut in
            the middle past it.
        signing_key: run only jobs signed with it, or with any key of a list; others
            are set aside (see [Security](../../security.md)).
        name: the worker's id in ``aioqueue info`` (default ``host:pid:random``).
        burst: stop once the queues are drained (jobs due later stay).
        cron: recurring jobs (``aioqueue.cron.cron`` / ``every``); their tasks are
            registered here too.
        cpu_slots: CPU-bound deliveries (``cpu=True``, plain ``def``) held at once,
            never prefetched.
        process_pool: size of the pool for ``executor="process"`` tasks (default:
            the CPUs available).

    Attributes:
        settings: the frozen ``WorkerSettings`` it runs with (``configure`` replaces it).
        id: the worker's id, as registered in Redis and logged.
        tasks: the registered tasks by name.
        cron: the recurring jobs.
        state: what startup hooks shared with the tasks (``current_job().state``).
        jobs_done: jobs finished since it started.
        started_at: when ``run()`` began (wall clock, seconds): the dashboard's uptime.
        redis_errors: error replies from Redis its loops logged and backed off from.
        serializer: the ``Serializer`` in use.
        on_startup: the startup hooks.
        on_shutdown: the shutdown hooks.
        max_error_size: as given.
        signing_key: as given.

    Raises:
        ConfigurationError: a setting out of range, two tasks with one name, a cron
            schedule that cannot fire.
    """

    def __init__(
        self,
        tasks: Iterable[Task[Any, Any]] = (),
        *,
        redis_url: str = DEFAULT_URL,
        queues: Iterable[str] = (DEFAULT_QUEUE,),
        concurrency: int = 100,
        lease: float = 30.0,
        heartbeat: float | None = None,
        grace: float = 30.0,
        serializer: str | Serializer = "msgpack",
        job_timeout: float = 300.0,
        max_attempts: int = 3,
        result_ttl: float = 3600.0,
        sync_threads: int = 40,
        on_startup: Iterable[Hook] = (),
        on_shutdown: Iterable[Hook] = (),
        max_jobs: int | None = None,
        prefetch: int | None = None,
        max_result_size: int | None = 1 << 20,
        max_error_size: int | None = DEFAULT_MAX_ERROR_SIZE,
        signing_key: signing.SigningKeys | None = None,
        name: str | None = None,
        burst: bool = False,
        cron: Iterable[CronJob] = (),
        cpu_slots: int = 1,
        process_pool: int | None = None,
    ) -> None:
        # every parameter that is a setting: one frozen object, checked and derived there
        self.settings = WorkerSettings.from_arguments(locals())
        self._keys = {q: QueueKeys(q) for q in self.queues}
        self.serializer = get_serializer(serializer)
        self.on_startup = list(on_startup)
        self.on_shutdown = list(on_shutdown)
        if signing_key is not None:
            signing.Signer(signing_key)  # a bad key is a ConfigurationError here, not at run
        self.max_error_size = check_max_error_size(max_error_size)
        self.signing_key = signing_key
        self.tasks: dict[str, Task[Any, Any]] = {}
        for t in tasks:
            self.register(t)
        self.cron = list(cron)
        self._register_cron()
        self.id = name or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.state: dict[str, Any] = {}
        self.jobs_done = 0
        self.started_at = time.time()  # when run() began (wall clock): the dashboard's uptime
        self.redis_errors = 0  # error replies from Redis the loops logged and backed off from
        # by delivery (queue, token), not job id: a worker whose loop stalled past a
        # lease may be handed its own job again while the first delivery still runs
        self._running: dict[tuple[str, str], Running] = {}
        self._outcomes: list[tuple[Running, Outcome]] = []
        self._stop_calls = 0
        self._stopping = False
        self._active = False  # run() is under way: settings stay as they are

    def _reset(self) -> None:
        # anyio primitives belong to the event loop that runs the worker: made here, not in __init__
        self._outcomes_ready = anyio.Event()
        self._stop = anyio.Event()
        self._hurry = anyio.Event()
        self._all_done = anyio.Event()
        self._fetch_scope = anyio.CancelScope()
        self._fetch_done = anyio.Event()
        self._flush_lock = anyio.Lock()
        self._slot_freed = anyio.Event()
        self._stopping = False
        if self._stop_calls:
            self._stop.set()
        if self._stop_calls > 1:
            self._hurry.set()

    def configure(self, **changes: Any) -> None:
        """Replaces settings (``WorkerSettings`` field names; None keeps a value);
        derived ones follow. Refused while the worker runs: its loops read them."""
        if self._active:
            raise ConfigurationError("configure() a worker before run(), not while it runs")
        self.settings = self.settings.replace(**changes)
        self._keys = {q: QueueKeys(q) for q in self.queues}

    def set_queues(self, queues: Iterable[str]) -> None:
        """Serve these queues instead, highest priority first (before ``run``)."""
        self.configure(queues=tuple(queues))

    @property
    def defaults(self) -> Defaults:
        """The job options tasks fall back to: timeout, attempts, result TTL."""
        s = self.settings
        return Defaults(s.job_timeout, s.max_attempts, s.result_ttl)

    # -- tasks ---------------------------------------------------------------------

    def register(self, t: Task[Any, Any]) -> Task[Any, Any]:
        """Adds a task this worker runs; returns it.

        Raises:
            ConfigurationError: a reference by name (``task_ref``), or another task
                with the same name.
        """
        if t.fn is None:
            raise ConfigurationError(
                f"task {t.name!r} is a reference by name; a worker needs the function"
            )
        if t.name in self.tasks and self.tasks[t.name].fn is not t.fn:
            raise ConfigurationError(f"two different tasks are named {t.name!r}")
        self.tasks[t.name] = t
        return t

    def _register_cron(self) -> None:
        names = [entry.name for entry in self.cron]
        if len(set(names)) != len(names):
            raise ConfigurationError(f"cron job names must differ (name=...): {names}")
        for entry in self.cron:
            if entry.task.name not in self.tasks:
                self.register(entry.task)

    def task(self, fn: Callable[P, Coroutine[Any, Any, R]]) -> Task[P, R]:
        """Decorator: ``@worker.task`` declares a task and registers it here."""
        t: Task[P, R] = task(fn)
        self.register(t)
        return t

    # -- lifecycle -----------------------------------------------------------------

    def stop(self) -> None:
        """Asks the worker to drain and exit; a second call skips the grace period."""
        self._stop_calls += 1
        if hasattr(self, "_stop"):
            self._stop.set()
            if self._stop_calls > 1:
                self._hurry.set()

    async def run(
        self,
        *,
        handle_signals: bool = False,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Runs until ``stop()``; ``task_status.started()`` once it is fetching jobs."""
        self._active = True
        self.started_at = time.time()
        try:
            if handle_signals:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._watch_signals, tg.cancel_scope)
                    await self._run(task_status)
                    tg.cancel_scope.cancel()
            else:
                await self._run(task_status)
        finally:
            self._active = False

    async def _watch_signals(self, scope: anyio.CancelScope) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGQUIT) as signals:
            async for signum in signals:
                log.info("worker.signal", signal=signal.Signals(signum).name, worker=self.id)
                self.stop()
                if signum == signal.SIGQUIT:
                    self.stop()

    async def _run(self, task_status: TaskStatus[None]) -> None:
        self._reset()
        self._dispatch = Dispatch(self.settings, self.tasks)
        self._nudge = self._keys[self.queues[0]].nudge(self.id)
        async with contextlib.AsyncExitStack() as stack:
            pool: ProcessPool | None = None
            pooled = [t for t in self.tasks.values() if t.executor == "process"]
            if pooled:  # first: a task it cannot import fails the start, before any claim
                pool = ProcessPool(pooled, self.settings.pool_size, self.serializer)
                await stack.enter_async_context(pool)
            self._redis = connect_any(self.redis_url)
            stack.push_async_callback(self._redis.aclose)
            # blocking and pub/sub reads get connections of their own
            self._block_redis = connect_any(self.redis_url)
            stack.push_async_callback(self._block_redis.aclose)
            self._sub_redis = connect_any(self.redis_url)
            stack.push_async_callback(self._sub_redis.aclose)
            self._cluster_waker: ClusterWaker | None = None
            if isinstance(self._block_redis, RedisCluster):
                # wake lists of different queues live in different slots: no single BLPOP
                sources = self._dispatch.cluster_sources(list(self._keys.values()), self._nudge)
                self._cluster_waker = ClusterWaker(self._block_redis, sources, IDLE_WAIT)
            else:
                assert isinstance(self._redis, Redis) and isinstance(self._block_redis, Redis)
                self._waker = WakeWaiter(self._block_redis, self._redis, IDLE_WAIT)
            self.scripts = Scripts(self._redis)
            stack.push_async_callback(self.scripts.aclose)  # its connections are its own
            self._writer = OutcomeWriter(self.scripts)
            await self._connect()
            for hook in self.on_startup:
                await hook(self.state)
            stack.push_async_callback(self._shutdown_hooks)
            self.executor = Executor(
                self.tasks,
                self.serializer,
                self.defaults,
                self.id,
                self.state,
                ThreadPool(self.sync_threads),
                self.signing_key,
                self.max_result_size,
                self.max_error_size,
                pool=pool,
            )
            stack.callback(self.executor.threads.close)
            handoff: Handoff[Running] = Handoff()
            async with anyio.create_task_group() as service:
                service.start_soon(self._flush_loop)
                service.start_soon(self._heartbeat_loop)
                service.start_soon(self._abort_listener)
                if self._cluster_waker is not None:
                    service.start_soon(self._cluster_waker.run)
                if self._dispatch.cpu_tasks:
                    service.start_soon(self._dispatch.nudge_loop, self._redis, self._nudge)
                if pool is not None:
                    service.start_soon(pool.serve)
                cron_scope = anyio.CancelScope()
                if self.cron:
                    runner = CronRunner(
                        self.cron, self.scripts, self.serializer, self.queues[0], self.signing_key
                    )
                    await service.start(self._run_cron, runner, cron_scope)
                async with anyio.create_task_group() as jobs:
                    self._jobs = jobs
                    self._handoff = handoff
                    self._consumers = 0
                    jobs.start_soon(self._fetch, handoff)
                    log.info(
                        "worker.started",
                        worker=self.id,
                        queues=self.queues,
                        concurrency=self.concurrency,
                        redis=redact(self.redis_url),
                        tasks=len(self.tasks),
                    )
                    task_status.started()
                    await self._stop.wait()
                    self._stopping = True
                    # no cron tick fired while draining: it would wait in the ready
                    # list for the next start, even with catch_up off
                    cron_scope.cancel()
                    self._fetch_scope.cancel()
                    await self._fetch_done.wait()
                    await self._drain()
                await self._flush_remaining()
                await self._deregister()
                service.cancel_scope.cancel()
        self._stop_calls = 0
        log.info("worker.stopped", worker=self.id, jobs_done=self.jobs_done)

    async def _run_cron(
        self,
        runner: CronRunner,
        scope: anyio.CancelScope,
        *,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        with scope:
            await runner.run(task_status=task_status)

    async def _shutdown_hooks(self) -> None:
        for hook in self.on_shutdown:
            with anyio.CancelScope(shield=True):
                await hook(self.state)

    async def _connect(self) -> None:
        """Waits for Redis with backoff: a worker started before Redis just waits."""
        backoff = 0.1
        while True:
            try:
                await self.scripts.load(worker=True)
                await self._check_redis()
                return
            except UNAVAILABLE as exc:
                log.warning("worker.redis_unavailable", error=str(exc), retry_in=backoff)
                await anyio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)

    async def _check_redis(self) -> None:
        """Warns when Redis may lose jobs: eviction allowed, or no persistence."""
        try:
            with anyio.fail_after(10):
                config = await self._redis.config_get("maxmemory-policy")
                persistence = await self._redis.config_get("appendonly")
                save = await self._redis.config_get("save")
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

    # -- fetching ------------------------------------------------------------------

    async def _fetch(self, handoff: Handoff[Running]) -> None:
        with self._fetch_scope:
            try:
                await self._fetch_loop(handoff)
            finally:
                handoff.close()
                self._fetch_done.set()

    async def _fetch_loop(self, handoff: Handoff[Running]) -> None:
        backoff = 0.05
        backlog = False
        while not self._stop.is_set():
            if backlog:
                # The last claim was cut by capacity, so more jobs wait: one pass of
                # the event loop lets finished jobs free their slots, and the next
                # claim takes many jobs in one round trip instead of one.
                await anyio.lowlevel.checkpoint()
            want = self._dispatch.capacity() - len(self._running)
            if want <= 0:
                self._slot_freed = anyio.Event()
                await self._slot_freed.wait()
                continue
            try:
                # shielded: a claim that ran in Redis but whose reply was
                # dropped by a cancel would leave jobs held until their lease ends
                with anyio.CancelScope(shield=True):
                    wait_ms, claimed = await self._claim(want)
            except (*UNAVAILABLE, ResponseError) as exc:
                self._loop_failed("claim", exc, backoff)
                await anyio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            backoff = 0.05
            backlog = len(claimed) == want
            if not claimed:
                if self.burst:
                    if not self._running:
                        self.stop()  # drained: the queues are empty and nothing runs here
                        return
                    await self._burst_wait(wait_ms)
                elif wait_ms != 0:
                    await self._block(wait_ms)
                continue
            batch = [Running(job) for job in claimed]
            for running in batch:
                self._running[(running.job.queue, running.job.token)] = running
                self._dispatch.held(running)
            self._all_done = anyio.Event()
            self._grow_consumers()
            # hand the whole batch over in this loop pass (the capacity bounds it)
            for running in batch:
                handoff.put(running)

    async def _claim(self, want: int) -> tuple[float, list[Claimed]]:
        """Claims up to ``want`` jobs, queues in priority order; returns the shortest wait."""
        claimed: list[Claimed] = []
        wait = -1.0
        lease_ms = int(self.lease * 1000)
        dispatch = self._dispatch
        cpu_free, run_free = dispatch.cpu_free(), dispatch.run_free()
        dispatch.cpu_waiting = False
        for queue in self.queues:
            reply = await self.scripts.claim(
                queue,
                want - len(claimed),
                self.id,
                lease_ms,
                cpu_free=cpu_free,
                cpu_tasks=dispatch.cpu_tasks,
                run_free=run_free,
            )
            wait_ms, got = reply.wait_ms, reply.jobs
            dispatch.cpu_waiting |= reply.waiting_cpu > 0
            claimed.extend(got)
            cpu_free = max(0, cpu_free - sum(job.cpu for job in got))
            run_free = max(0, run_free - len(got))
            if wait_ms >= 0 and (wait < 0 or wait_ms < wait):
                wait = wait_ms
            if len(claimed) >= want:
                break
        return wait, claimed

    async def _block(self, wait_ms: float) -> None:
        timeout = IDLE_WAIT if wait_ms < 0 else min(wait_ms / 1000, IDLE_WAIT)
        self._dispatch.blocking()
        try:
            await self._block_on(timeout, wait_ms)
        finally:
            self._dispatch.awake()

    async def _block_on(self, timeout: float, wait_ms: float) -> None:
        if self._cluster_waker is not None:
            await self._cluster_waker.wait(timeout)
            return
        keys = [k for q in self.queues for k in self._dispatch.wake_keys(self._keys[q])]
        if self._dispatch.cpu_tasks:
            keys.append(self._nudge)
        try:
            with anyio.fail_after(timeout + 10):  # a stalled link must not wedge the fetcher
                await self._waker.wait(keys, wait_ms)
        except TimeoutError:
            log.warning("worker.redis_stalled", waited=timeout + 10)
        except (*UNAVAILABLE, ResponseError) as exc:  # a planted wake key: the next claim moves it
            self._loop_failed("wait", exc, 1.0)
            await anyio.sleep(1.0)

    async def _burst_wait(self, wait_ms: float) -> None:
        """Blocks until new work arrives or this worker's last job ends, whichever first."""
        all_done = self._all_done
        async with anyio.create_task_group() as tg:

            async def woken() -> None:
                await self._block(wait_ms)
                tg.cancel_scope.cancel()

            tg.start_soon(woken)
            await all_done.wait()
            tg.cancel_scope.cancel()

    # -- running -------------------------------------------------------------------

    def _grow_consumers(self) -> None:
        while self._consumers < min(len(self._running), self.concurrency):
            self._consumers += 1
            self._jobs.start_soon(self._consume, self._handoff)

    async def _consume(self, handoff: Handoff[Running]) -> None:
        streak = 0
        while True:
            # Take a queued job without a checkpoint: a checkpoint per item cost
            # more than a no-op job. Every 32 jobs in a row the consumer still
            # yields, so the loop's other tasks run.
            try:
                if streak >= 32:
                    streak = 0
                    await anyio.lowlevel.checkpoint()
                running = handoff.get_nowait()
                streak += 1
            except anyio.WouldBlock:
                streak = 0
                try:
                    running = await handoff.get()
                except anyio.EndOfStream:
                    return
            except anyio.EndOfStream:
                return
            if self._stop.is_set():
                # stopping (a signal, max_jobs): claimed but not started goes back now
                self._finished(running, RELEASE)
                continue
            outcome: Outcome | None = None
            started = time.perf_counter()
            try:
                outcome = await self.executor.run(running)
            finally:
                self._dispatch.ran(running, time.perf_counter() - started)
                self._finished(running, outcome)

    def _finished(self, running: Running, outcome: Outcome | None) -> None:
        job = running.job
        del self._running[(job.queue, job.token)]
        self._dispatch.released(running)
        self._slot_freed.set()
        if outcome is not None:
            self._outcomes.append((running, outcome))
            self._outcomes_ready.set()
        self.jobs_done += 1
        if not self._running:
            self._all_done.set()
        if self.max_jobs is not None and self.jobs_done >= self.max_jobs and not self._stop_calls:
            self.stop()

    async def _drain(self) -> None:
        if self._running:
            log.info("worker.draining", running=len(self._running), grace=self.grace)
            with anyio.move_on_after(self.grace):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._cancel_on_hurry, tg.cancel_scope)
                    await self._all_done.wait()
                    tg.cancel_scope.cancel()
        if self._running:
            for running in list(self._running.values()):
                running.stop("shutdown")
            await self._all_done.wait()

    async def _cancel_on_hurry(self, scope: anyio.CancelScope) -> None:
        await self._hurry.wait()
        scope.cancel()

    # -- outcomes ------------------------------------------------------------------

    async def _flush_loop(self) -> None:
        while True:
            await self._outcomes_ready.wait()
            self._outcomes_ready = anyio.Event()
            # jobs that end in this same pass of the event loop join the batch
            await anyio.lowlevel.checkpoint()
            await self._flush()

    async def _flush(self) -> None:
        """Writes every pending outcome, one call per queue; retries while Redis is away."""
        async with self._flush_lock:
            await self._flush_locked()

    async def _flush_locked(self) -> None:
        backoff = 0.05
        while self._outcomes:
            batch = self._outcomes[:FINISH_BATCH]
            del self._outcomes[:FINISH_BATCH]
            try:
                await self._writer.write(batch)
                backoff = 0.05
            except (*UNAVAILABLE, ResponseError) as exc:
                self._outcomes[:0] = batch
                self._loop_failed("finish", exc, backoff, pending=len(self._outcomes))
                await anyio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)

    @property
    def outcomes_refused(self) -> int:
        """Outcomes Redis refused on their own (their jobs were set aside), since start."""
        return self._writer.refused if hasattr(self, "_writer") else 0

    async def _flush_remaining(self) -> None:
        with anyio.move_on_after(max(self.lease, 5.0), shield=True) as scope:
            await self._flush()
        if scope.cancelled_caught:
            log.error("worker.outcomes_unwritten", pending=len(self._outcomes))

    # -- heartbeat and aborts -------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        await on_schedule(self._heartbeat, self.heartbeat_interval, self._beat_failed)

    def _beat_failed(self, exc: Exception, retry_in: float) -> None:
        self._loop_failed("heartbeat", exc, retry_in)

    async def _heartbeat(self) -> None:
        info = msgspec.json.encode(
            {
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "queues": self.queues,
                "concurrency": self.concurrency,
                "running": len(self._running),
                "done": self.jobs_done,
                "seen": time.time(),
                "started": self.started_at,
                "lease": self.lease,
            }
        )
        lease_ms = int(self.lease * 1000)
        for queue in self.queues:
            held = [(r.job.id, token) for (q, token), r in self._running.items() if q == queue]
            stop = await self.scripts.heartbeat(
                queue, self.id, lease_ms, info, int(REGISTRY_TTL * 1000), held
            )
            for token, reason in stop:
                running = self._running.get((queue, token))
                if running is not None:
                    log.warning("job.stopping", job_id=running.job.id, queue=queue, reason=reason)
                    running.stop(reason)

    async def _abort_listener(self) -> None:
        channels = {self._keys[q].abort: q for q in self.queues}
        backoff = 0.1
        while True:
            try:
                async with self._abort_pubsub() as pubsub:
                    await pubsub.subscribe(*channels)
                    backoff = 0.1
                    async for msg in pubsub.listen():
                        if msg["type"] == "message":
                            self._on_abort(channels, msg["channel"], msg["data"])
            except UNAVAILABLE as exc:
                log.warning("worker.abort_listener_disconnected", error=str(exc), retry_in=backoff)
                await anyio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
            except ResponseError as exc:
                self._loop_failed("aborts", exc, backoff)
                await anyio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)

    def _on_abort(self, channels: dict[str, str], channel: object, data: object) -> None:
        target = abort_target(channels, channel, data)  # None: not a job id (logged)
        for running in self._deliveries(*target) if target is not None else ():
            running.stop("abort")

    def _loop_failed(self, loop: str, exc: Exception, retry_in: float, **fields: Any) -> None:
        """A failed call in a loop: logged, error replies counted; the loop backs off."""
        if isinstance(exc, UNAVAILABLE):
            log.warning(
                "worker.redis_unavailable", loop=loop, error=str(exc), retry_in=retry_in, **fields
            )
            return
        self.redis_errors += 1
        log.error(
            "worker.redis_error",
            loop=loop,
            error=str(exc),
            retry_in=retry_in,
            count=self.redis_errors,
            **fields,
        )

    def _deliveries(self, queue: str, job_id: str) -> list[Running]:
        """This worker's deliveries of a job: one, or two after a stall past a lease."""
        return [r for (q, _), r in self._running.items() if q == queue and r.job.id == job_id]

    def _abort_pubsub(self) -> contextlib.AbstractAsyncContextManager[PubSub]:
        if isinstance(self._sub_redis, ClusterClient):
            return any_node_pubsub(self._sub_redis)
        if isinstance(self._sub_redis, RedisCluster):
            raise TypeError("a cluster worker needs aioqueue._redis.cluster.ClusterClient")
        return self._sub_redis.pubsub()

    async def _deregister(self) -> None:
        with anyio.move_on_after(2.0, shield=True):
            for queue in self.queues:
                with contextlib.suppress(*UNAVAILABLE):
                    await self.scripts.deregister(queue, self.id)

    @property
    def redis(self) -> RedisClient:
        """The worker's redis-py client, while it runs."""
        return self._redis
