"""The worker: the registry of tasks and cron entries, its settings, and ``run()``.

A ``Worker`` is what the user builds and ``aioqueue run`` finds: tasks by
name, recurring jobs, the frozen ``WorkerSettings`` (``configure`` replaces
them before a run, never during one) and counters over its life. It holds no
connection and no event: each ``run()`` makes a ``WorkerRun`` (runtime.py)
with everything the run needs, and drops it when the run returns.

    Worker.run ─> WorkerRun ─┬─ Fetcher        claim, block, hand over    fetch.py
                             ├─ Consumers      run each delivery          consumers.py, executor.py
                             ├─ OutcomeWriter  batched ``finish``         outcomes.py
                             ├─ Liveness       heartbeat, aborts          liveness.py
                             └─ CronRunner     cron ticks                 cron_runner.py

Stopping (``stop()``, or SIGTERM/SIGINT when ``handle_signals``): fetching stops,
jobs claimed but not started go back at once, running jobs get ``grace`` seconds,
then are cancelled and handed back; outcomes are flushed; the worker deregisters.
A second stop request skips what is left of the grace period. A ``stop()`` before
``run()`` makes the next run stop as soon as it has started.

Burst mode (``burst=True``) stops the worker by itself once a claim finds no
ready job and none of its own jobs runs: the queues are drained. Jobs scheduled
for later (delays, retry backoffs) stay for the next run.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import time
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, ParamSpec, TypeVar

import anyio
import structlog
from anyio.abc import TaskStatus

from aioqueue._hooks import Hooks, with_installed
from aioqueue._protocol import signing
from aioqueue._protocol.keys import EVENTS_MAXLEN
from aioqueue._redis.connect import DEFAULT_URL
from aioqueue._worker.executor import Defaults
from aioqueue._worker.failures import DEFAULT_MAX_ERROR_SIZE, check_max_error_size
from aioqueue._worker.runtime import Hook, WorkerRun
from aioqueue._worker.settings import SettingsView, WorkerSettings
from aioqueue._worker.stats import WorkerStats
from aioqueue.cron import CronJob
from aioqueue.errors import ConfigurationError
from aioqueue.serializers import Serializer, get_serializer
from aioqueue.task import DEFAULT_QUEUE, Task, task

__all__ = ["Worker"]

P = ParamSpec("P")
R = TypeVar("R")

log = structlog.get_logger("aioqueue.worker")


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
        middleware: hooks around each attempt and the worker's start and stop
            (``aioqueue.middleware``), in order; more with ``add_middleware``.
        events_maxlen: entries each queue's event stream keeps, approximately
            (``XADD MAXLEN ~``, see [Event stream](../events.md)); 0 writes none.

    Attributes:
        settings: the frozen ``WorkerSettings`` it runs with (``configure`` replaces it).
        id: the worker's id, as registered in Redis and logged.
        tasks: the registered tasks by name.
        cron: the recurring jobs.
        state: what startup hooks shared with the tasks (``current_job().state``).
        jobs_done: jobs finished since it started.
        started_at: when ``run()`` began (wall clock, seconds): the dashboard's uptime.
        redis_errors: error replies from Redis its loops logged and backed off from.
        stats: the ``WorkerStats`` behind ``jobs_done``, ``redis_errors`` and
            ``outcomes_refused``, counted over every run.
        serializer: the ``Serializer`` in use.
        on_startup: the startup hooks.
        on_shutdown: the shutdown hooks.
        middleware: the middleware, in the order they run.
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
        middleware: Iterable[object] = (),
        events_maxlen: int = EVENTS_MAXLEN,
    ) -> None:
        # every parameter that is a setting: one frozen object, checked and derived there
        self.settings = WorkerSettings.from_arguments(locals())
        self.serializer = get_serializer(serializer)
        self.on_startup = list(on_startup)
        self.on_shutdown = list(on_shutdown)
        self.middleware: list[object] = []
        for m in with_installed(middleware):
            self.add_middleware(m)
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
        self.state: dict[str, Any] = {}  # the on_startup hooks' and the tasks' (JobContext)
        self.stats = WorkerStats()
        self.started_at = time.time()  # when run() began (wall clock): the dashboard's uptime
        self._early_stops = 0  # stop() calls before run(): the next run stops at once
        self._run: WorkerRun | None = None  # the run under way, or the last one
        self._active = False  # run() is under way: settings stay as they are

    def configure(self, **changes: Any) -> None:
        """Replaces settings (``WorkerSettings`` field names; None keeps a value);
        derived ones follow. Refused while the worker runs: its loops read them."""
        if self._active:
            raise ConfigurationError("configure() a worker before run(), not while it runs")
        self.settings = self.settings.replace(**changes)

    def set_queues(self, queues: Iterable[str]) -> None:
        """Serve these queues instead, highest priority first (before ``run``)."""
        self.configure(queues=tuple(queues))

    @property
    def defaults(self) -> Defaults:
        """The job options tasks fall back to: timeout, attempts, result TTL."""
        s = self.settings
        return Defaults(s.job_timeout, s.max_attempts, s.result_ttl)

    def add_middleware(self, middleware: object) -> None:
        """Adds a middleware after the others; it takes effect at the next ``run()``.

        Raises:
            ConfigurationError: a class instead of an instance, or an object with none
                of the hooks.
        """
        Hooks([middleware])  # checked now, not at the run
        self.middleware.append(middleware)

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
        if self._run is not None and self._active:
            self._run.stop()
        else:
            self._early_stops += 1  # the next run stops as soon as it has started

    async def run(
        self,
        *,
        handle_signals: bool = False,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Runs until ``stop()``; ``task_status.started()`` once it is fetching jobs."""
        if self._active:
            raise ConfigurationError("this worker is running already: one run() at a time")
        self.started_at = time.time()
        run = WorkerRun(
            self.id,
            self.settings,
            self.tasks,
            cron=self.cron,
            serializer=self.serializer,
            signing_key=self.signing_key,
            max_error_size=self.max_error_size,
            state=self.state,
            stats=self.stats,
            started_at=self.started_at,
            on_startup=self.on_startup,
            on_shutdown=self.on_shutdown,
            middleware=self.middleware,
        )
        self._run, self._active = run, True
        try:
            for _ in range(self._early_stops):
                run.stop()
            self._early_stops = 0
            if handle_signals:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._watch_signals)
                    await run.run(task_status)
                    tg.cancel_scope.cancel()
            else:
                await run.run(task_status)
        finally:
            self._active = False

    async def _watch_signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGQUIT) as signals:
            async for signum in signals:
                log.info("worker.signal", signal=signal.Signals(signum).name, worker=self.id)
                self.stop()
                if signum == signal.SIGQUIT:
                    self.stop()

    # -- counters over the worker's life ---------------------------------------------

    @property
    def jobs_done(self) -> int:
        """Jobs finished since it started."""
        return self.stats.jobs_done

    @property
    def redis_errors(self) -> int:
        """Error replies from Redis the loops logged and backed off from, since start."""
        return self.stats.redis_errors

    @property
    def outcomes_refused(self) -> int:
        """Outcomes Redis refused on their own (their jobs were set aside), since start."""
        return self.stats.outcomes_refused
