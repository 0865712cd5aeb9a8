"""Tasks: a function plus the options its jobs run with.

``@task`` turns ``async def f(x: int) -> str`` into ``Task[[int], str]`` so that
``queue.enqueue(f, 1)`` type-checks its arguments and returns ``Job[str]``.
Per-call options (job id, delay, ...) go through ``f.options(...)`` and never
mix with the function's own keyword arguments.

Uniqueness: ``@task(unique=True)`` lets at most one job of the task run at a
time (per queue) across all workers; ``unique_key=lambda user_id: str(user_id)``
narrows that to jobs whose arguments give the same key. A job that finds the
lock taken waits (``on_locked="wait"``: parked until the holder ends, no
polling) or is dropped (``on_locked="drop"``: it ends as aborted). The lock is
taken by the claim itself and lapses with the holder's lease if its worker dies.

Kinds: a task is I/O-bound (an ``async def``, or ``cpu=False``) or CPU-bound
(``cpu=True``, or a plain ``def``, which runs in a thread). A worker holds only
as many CPU-bound deliveries as it can run at once and never prefetches them,
so a burst of them spreads over the worker processes. ``executor="process"``
runs a plain ``def`` in the worker's process pool instead of a thread: true
parallelism in one worker, and a timeout that really stops the function.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Generic, Literal, ParamSpec, TypeVar, overload

from aioqueue._protocol.durations import aware_datetime, count, seconds
from aioqueue._protocol.keys import check_job_id, check_queue_name
from aioqueue.errors import ConfigurationError

__all__ = ["Call", "JobOptions", "Task", "TaskLock", "task", "task_ref"]

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_QUEUE = "default"
DEFAULT_RESULT_TTL = 3600.0
DEFAULT_MAX_ATTEMPTS = 3

OnLocked = Literal["wait", "drop"]
ExecutorName = Literal["thread", "process"]


@dataclass(frozen=True, slots=True)
class TaskLock:
    """At most one job of a task (per ``key`` of its arguments) runs at a time.

    Made by ``@task(unique=True, unique_key=..., on_locked=...)``.

    Attributes:
        key: a function of the job's arguments giving the lock's name; None: one
            lock for the whole task.
        on_locked: ``"wait"`` (parked until the holder ends) or ``"drop"`` (the job
            ends as aborted).
    """

    key: Callable[..., object] | None = None
    on_locked: OnLocked = "wait"

    def __post_init__(self) -> None:
        if self.on_locked not in ("wait", "drop"):
            raise ConfigurationError("on_locked must be 'wait' or 'drop'")

    def wire(self, task_name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        """The job's lock field: the mode letter, then the lock's name (internal)."""
        name = task_name if self.key is None else f"{task_name}:{self.key(*args, **kwargs)}"
        return ("w" if self.on_locked == "wait" else "d") + name


@dataclass(frozen=True, slots=True)
class JobOptions:
    """Options of one job. ``None`` means: the task's (or the worker's) default.

    Given as ``@task(...)`` defaults and per call through ``task.options(...)``.

    Attributes:
        queue: the queue the job goes to.
        job_id: its id; an enqueue of an id already stored returns that job
            (``Job.created`` False) and stores nothing.
        delay: seconds (or a timedelta) before it may run.
        at: an aware datetime before which it may not run (Redis time).
        timeout: seconds an attempt may run before it is cancelled.
        max_attempts: attempts in all before it is dead-lettered.
        result_ttl: seconds a result is kept; 0 = not stored (only waiters see it);
            a negative value keeps it until deleted.
    """

    queue: str | None = None
    job_id: str | None = None
    delay: float | timedelta | None = None
    at: datetime | None = None
    timeout: float | None = None
    max_attempts: int | None = None
    result_ttl: float | None = None

    def merged(self, override: JobOptions) -> JobOptions:
        """These options with those ``override`` sets."""
        return JobOptions(
            **{
                name: getattr(override, name)
                if getattr(override, name) is not None
                else getattr(self, name)
                for name in self.__slots__
            }
        )

    def validate(self) -> JobOptions:
        """Checks every option given (None: not given); a ConfigurationError names the bad one."""
        if self.queue is not None:
            check_queue_name(self.queue)
        if self.job_id is not None:
            check_job_id(self.job_id)
        if self.delay is not None and self.at is not None:
            raise ConfigurationError("give delay or at, not both")
        if self.delay is not None:
            seconds(self.delay, "delay")
        if self.at is not None:
            aware_datetime(self.at, "at")
        if self.timeout is not None:
            seconds(self.timeout, "timeout", zero=False, timedelta_ok=False)
        if self.max_attempts is not None:
            count(self.max_attempts, "max_attempts", least=1)
        if self.result_ttl is not None:
            seconds(self.result_ttl, "result_ttl", negative=True, timedelta_ok=False)
        return self


class Task(Generic[P, R]):
    """A named function with the options its jobs run with.

    Made by ``@task`` or ``task_ref``; ``queue.enqueue(task, *args, **kwargs)``
    type-checks the arguments against the function's signature.

    Attributes:
        fn: the function; None for a reference by name (see ``task_ref``): such a
            task can be enqueued by a producer that does not import the worker's
            code, not run.
        name: the name jobs carry (``module.function`` by default).
        defaults: the task's ``JobOptions``.
        is_async: ``fn`` is an ``async def``.
        executor: ``"thread"`` or ``"process"`` for a plain ``def``; None for async.
        cpu: counted as CPU-bound (held only in free CPU slots, never prefetched).
        backoff: first retry delay in seconds; doubles per attempt, with jitter.
        backoff_max: the longest retry delay.
        max_lost: deliveries lost to dead workers before the job fails with
            ``WorkerLost``.
        lock: the task's ``TaskLock``, if unique.
    """

    __slots__ = (
        "backoff",
        "backoff_max",
        "cpu",
        "defaults",
        "executor",
        "fn",
        "is_async",
        "lock",
        "max_lost",
        "name",
    )

    def __init__(
        self,
        fn: Callable[P, Awaitable[R]] | Callable[P, R] | None,
        name: str,
        defaults: JobOptions = JobOptions(),
        *,
        backoff: float = 1.0,
        backoff_max: float = 300.0,
        max_lost: int = 3,
        lock: TaskLock | None = None,
        cpu: bool | None = None,
        executor: ExecutorName | None = None,
    ) -> None:
        self.fn = fn
        self.name = name
        self.defaults = defaults.validate()
        self.is_async = fn is not None and inspect.iscoroutinefunction(fn)
        self.executor = _check_executor(fn, name, self.is_async, cpu, executor)
        if cpu is None:
            # a plain def holds the GIL unless it says otherwise: counted as CPU-bound
            cpu = fn is not None and (executor == "process" or not self.is_async)
        self.cpu = cpu
        self.backoff = seconds(backoff, "backoff")
        self.backoff_max = seconds(backoff_max, "backoff_max")
        self.max_lost = count(max_lost, "max_lost", least=0)
        self.lock = lock

    def lock_wire(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        """'' for a task without a lock, else the job's lock field (see TaskLock)."""
        return "" if self.lock is None else self.lock.wire(self.name, args, kwargs)

    def options(
        self,
        *,
        queue: str | None = None,
        job_id: str | None = None,
        delay: float | timedelta | None = None,
        at: datetime | None = None,
        timeout: float | None = None,
        max_attempts: int | None = None,
        result_ttl: float | None = None,
    ) -> Task[P, R]:
        """A copy of this task whose jobs use these options."""
        given = JobOptions(queue, job_id, delay, at, timeout, max_attempts, result_ttl)
        clone: Task[P, R] = Task.__new__(Task)
        for slot in Task.__slots__:
            setattr(clone, slot, getattr(self, slot))
        clone.defaults = self.defaults.merged(given).validate()
        return clone

    def call(self, *args: P.args, **kwargs: P.kwargs) -> Call[R]:
        """A prepared job for ``Queue.enqueue_many``."""
        return Call(self, args, kwargs)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Awaitable[R] | R:
        """Runs the function here, in this process: handy in tests."""
        if self.fn is None:
            raise ConfigurationError(
                f"task {self.name!r} is a reference by name; it cannot run here"
            )
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<Task {self.name}>"


@dataclass(frozen=True, slots=True)
class Call(Generic[R]):
    """One job ready to enqueue: a task and its arguments (``task.call(...)``),
    for ``Queue.enqueue_many`` and cron.

    Attributes:
        task: the task, with its options.
        args: positional arguments.
        kwargs: keyword arguments.
    """

    task: Task[Any, R]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]

    def with_options(self, **options: Any) -> Call[R]:
        """The same call with these ``JobOptions`` (``job_id=``, ``delay=``, ...)."""
        return replace(self, task=self.task.options(**options))


def _check_executor(
    fn: Callable[..., Any] | None,
    name: str,
    is_async: bool,
    cpu: bool | None,
    executor: str | None,
) -> ExecutorName | None:
    if cpu is not None and not isinstance(cpu, bool):
        raise ConfigurationError(f"task {name!r}: cpu must be True or False, got {cpu!r}")
    if executor is None:
        return None
    if executor not in ("thread", "process"):
        raise ConfigurationError(
            f"task {name!r}: executor must be 'thread' or 'process', got {executor!r}"
        )
    if is_async:
        raise ConfigurationError(
            f"task {name!r}: executor={executor!r} runs a plain def; this is an async def"
        )
    if executor == "process":
        if cpu is False:
            raise ConfigurationError(
                f"task {name!r}: a process-pool task holds a pool process: it cannot be cpu=False"
            )
        qualname = getattr(fn, "__qualname__", "")
        if fn is not None and ("<" in qualname or getattr(fn, "__module__", None) is None):
            raise ConfigurationError(
                f"task {name!r} runs in a process pool, so its function must be importable"
                f" by module and name (a def at module level); {qualname!r} is not"
            )
    return executor  # type: ignore[return-value]


def task_ref(name: str, **options: Any) -> Task[..., Any]:
    """A task known only by name, for producers that do not import worker code."""
    return Task(None, name, JobOptions(**options))


def _name_of(fn: Callable[..., Any]) -> str:
    return f"{fn.__module__}.{fn.__qualname__}"


class _TaskDecorator:
    def __init__(self, name: str | None, defaults: JobOptions, extra: dict[str, Any]) -> None:
        self._name = name
        self._defaults = defaults
        self._extra = extra

    @overload
    def __call__(self, fn: Callable[P, Coroutine[Any, Any, R]]) -> Task[P, R]: ...
    @overload
    def __call__(self, fn: Callable[P, R]) -> Task[P, R]: ...
    def __call__(self, fn: Callable[P, Any]) -> Task[P, Any]:
        return Task(fn, self._name or _name_of(fn), self._defaults, **self._extra)


@overload
def task(fn: Callable[P, Coroutine[Any, Any, R]], /) -> Task[P, R]: ...
@overload
def task(fn: Callable[P, R], /) -> Task[P, R]: ...
@overload
def task(
    *,
    name: str | None = None,
    queue: str | None = None,
    timeout: float | None = None,
    max_attempts: int | None = None,
    result_ttl: float | None = None,
    backoff: float = 1.0,
    backoff_max: float = 300.0,
    max_lost: int = 3,
    unique: bool = False,
    unique_key: Callable[..., object] | None = None,
    on_locked: OnLocked = "wait",
    cpu: bool | None = None,
    executor: ExecutorName | None = None,
) -> _TaskDecorator: ...
def task(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    queue: str | None = None,
    timeout: float | None = None,
    max_attempts: int | None = None,
    result_ttl: float | None = None,
    backoff: float = 1.0,
    backoff_max: float = 300.0,
    max_lost: int = 3,
    unique: bool = False,
    unique_key: Callable[..., object] | None = None,
    on_locked: OnLocked = "wait",
    cpu: bool | None = None,
    executor: ExecutorName | None = None,
) -> Task[Any, Any] | _TaskDecorator:
    """Declare a task: ``@task`` or ``@task(max_attempts=5, timeout=30)``.

    backoff: base seconds of the exponential retry delay, capped at backoff_max;
    each delay is drawn between half and all of that (jitter). max_lost:
    deliveries lost to a dead worker before the job is dead-lettered (a job
    that kills its worker every time must not loop forever).
    unique / unique_key / on_locked: see the module docstring; unique_key is
    called with the job's arguments at enqueue time and implies unique.
    cpu: the task is CPU-bound (default: True for a plain ``def``, False for an
    ``async def``); a worker holds at most ``cpu_slots`` such deliveries.
    executor: ``"process"`` runs a plain ``def`` in the worker's process pool
    (see the module docstring); ``"thread"`` (the default for a ``def``) in a thread.
    """
    defaults = JobOptions(
        queue=queue, timeout=timeout, max_attempts=max_attempts, result_ttl=result_ttl
    )
    lock = TaskLock(unique_key, on_locked) if unique or unique_key is not None else None
    extra = {
        "backoff": backoff,
        "backoff_max": backoff_max,
        "max_lost": max_lost,
        "lock": lock,
        "cpu": cpu,
        "executor": executor,
    }
    decorator = _TaskDecorator(name, defaults, extra)
    if fn is not None:
        return decorator(fn)
    return decorator
