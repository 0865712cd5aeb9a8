"""Recurring jobs, declared next to the worker that fires them.

    worker = Worker(
        [report, ping],
        cron=[
            cron("*/5 * * * *", report.call("daily", top=10), timezone="Europe/Paris"),
            cron("0 3 * * *", vacuum, no_overlap=True, catch_up=True),
            every(timedelta(seconds=30), ping),
        ],
    )

The job is a ``Task`` without arguments or a ``Task.call(...)``, so its
arguments are type-checked like an enqueue. Options of the job itself (queue,
timeout, ...) come from ``task.options(...)`` as for any job.

Expressions have 5 fields (minute hour day-of-month month day-of-week) or 6 with
a leading seconds field, parsed by cronsim, in ``timezone`` (default UTC). On
daylight-saving days a job at a fixed local time runs once, as Debian cron does:
a time skipped by the clock change fires when the clock jumps, a time repeated
fires on its first occurrence; jobs on ``*`` hours follow real time.
``every(interval)`` ticks on multiples of the interval since the Unix epoch, so
every worker agrees on the ticks without talking to the others.

Each tick fires exactly once across any number of workers and hosts: workers
sleep until the tick (by the Redis clock) and call ``cron_fire``, which records
the last tick fired per name and enqueues the job with the id
``cron:<name>:<tick ms>`` in one atomic step; the others find the tick taken.

catch_up: ticks missed while no worker ran are skipped (default), or with
``catch_up=True`` the latest missed tick fires once when a worker starts.
no_overlap: a tick is skipped while the previous run of the job still runs
(a lock held by the running delivery, lapsing with its lease if its worker dies).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from aioqueue._protocol.keys import QueueKeys
from aioqueue.errors import ConfigurationError
from aioqueue.task import Call, Task

if TYPE_CHECKING:
    from aioqueue._redis.connect import RedisClient

__all__ = ["CronInfo", "CronJob", "cron", "every", "schedule_status", "schedule_table"]

_NAME = re.compile(r"^[^\s{}\x00]{1,150}$")


@dataclass(frozen=True, slots=True)
class CronJob:
    """One recurring job: ``expression`` (cron) or ``interval_ms`` (every).

    Made by ``cron()`` or ``every()``, given to ``Worker(cron=[...])``.

    Attributes:
        name: the schedule's name in Redis (default: the task's name).
        call: the job each tick enqueues.
        expression: the cron expression, for ``cron()``.
        interval_ms: the interval, for ``every()``.
        timezone: the zone the expression is read in.
        catch_up: at start, fire the last tick missed while no worker ran.
        no_overlap: skip a tick while the previous run still runs.
    """

    name: str
    call: Call[Any]
    expression: str | None
    interval_ms: int | None
    timezone: tzinfo
    catch_up: bool
    no_overlap: bool

    @property
    def task(self) -> Task[Any, Any]:
        """The task each tick runs."""
        return self.call.task

    @property
    def schedule(self) -> str:
        """The schedule as written: the expression, or ``every <seconds>s``."""
        if self.expression is not None:
            return self.expression
        assert self.interval_ms is not None
        return f"every {self.interval_ms / 1000:g}s"

    @property
    def definition(self) -> str:
        """What decides the ticks: the schedule and its zone. Two workers with one
        name and different definitions are a changed schedule (see ``cron_define``)."""
        return f"{self.schedule} {self.timezone}"

    def queue(self, default: str) -> str:
        """The queue its jobs go to: the task's, else ``default``."""
        return self.task.defaults.queue or default

    def job_id(self, tick_ms: int) -> str:
        """Deterministic per tick, so a tick can never make two jobs."""
        return f"cron:{self.name}:{tick_ms}"

    def lock_wire(self) -> str:
        """The lock of each run: no_overlap drops a run while the last one runs."""
        if self.no_overlap:
            return f"dcron:{self.name}"
        return self.task.lock_wire(self.call.args, self.call.kwargs)

    def next_after(self, ms: int) -> int:
        """The first tick strictly after ``ms`` (Unix ms)."""
        if self.interval_ms is not None:
            return (ms // self.interval_ms + 1) * self.interval_ms
        assert self.expression is not None
        start = datetime.fromtimestamp(ms / 1000, self.timezone)
        return _ms(next(CronSim(self.expression, start)))

    def latest_at_or_before(self, ms: int) -> int:
        """The last tick at or before ``ms``."""
        if self.interval_ms is not None:
            return ms // self.interval_ms * self.interval_ms
        assert self.expression is not None
        # cronsim going back from a time with a fraction of a second counts that
        # second itself, from a whole second only earlier ones: +1 ms covers both
        start = datetime.fromtimestamp((ms + 1) / 1000, self.timezone)
        return _ms(next(CronSim(self.expression, start, reverse=True)))


def _ms(dt: datetime) -> int:
    return round(dt.timestamp() * 1000)


def _zone(timezone: str | tzinfo) -> tzinfo:
    if not isinstance(timezone, str):
        return timezone
    if timezone.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigurationError(f"unknown time zone {timezone!r}") from exc


def _as_call(job: Task[[], Any] | Call[Any]) -> Call[Any]:
    if isinstance(job, Call):
        return job
    if isinstance(job, Task):
        return job.call()
    raise ConfigurationError(f"a cron job needs a task or task.call(...), got {job!r}")


def _checked_name(name: str | None, call: Call[Any]) -> str:
    name = name or call.task.name
    if not _NAME.match(name):
        raise ConfigurationError(
            f"invalid cron name {name!r}: 1-150 characters, no spaces, braces or NUL"
        )
    return name


def cron(
    expression: str,
    job: Task[[], Any] | Call[Any],
    *,
    name: str | None = None,
    timezone: str | tzinfo = "UTC",
    catch_up: bool = False,
    no_overlap: bool = False,
) -> CronJob:
    """Run ``job`` at every tick of ``expression`` (5 fields, or 6 with seconds first).

    name: identifies the schedule in Redis (default: the task's name); give one
    when a worker runs the same task on two schedules.
    """
    call = _as_call(job)
    zone = _zone(timezone)
    fields = expression.split()
    if len(fields) not in (5, 6):
        raise ConfigurationError(
            f"cron expression {expression!r} needs 5 fields, or 6 with seconds first"
        )
    try:
        next(CronSim(expression, datetime.now(zone)))
    except (CronSimError, StopIteration) as exc:
        raise ConfigurationError(f"invalid cron expression {expression!r}: {exc}") from exc
    return CronJob(
        _checked_name(name, call), call, " ".join(fields), None, zone, catch_up, no_overlap
    )


def every(
    interval: timedelta | float,
    job: Task[[], Any] | Call[Any],
    *,
    name: str | None = None,
    catch_up: bool = False,
    no_overlap: bool = False,
) -> CronJob:
    """Run ``job`` every ``interval`` (a timedelta or seconds), on multiples of it since
    the Unix epoch: ``every(timedelta(hours=1), ...)`` fires on the hour (UTC)."""
    seconds = interval.total_seconds() if isinstance(interval, timedelta) else float(interval)
    interval_ms = round(seconds * 1000)
    if interval_ms < 1:
        raise ConfigurationError("a cron interval must be at least 1 ms")
    call = _as_call(job)
    return CronJob(_checked_name(name, call), call, None, interval_ms, UTC, catch_up, no_overlap)


@dataclass(frozen=True, slots=True)
class CronInfo:
    """One line of the schedule: what runs when, and when it last fired
    (``aioqueue cron`` prints these).

    Attributes:
        name: the schedule's name.
        task: the task's name.
        schedule: the expression, or ``every <seconds>s``.
        timezone: the zone's name.
        queue: the queue its jobs go to.
        next_fire: the next tick, in the job's zone.
        last_fired: the last tick fired (by any worker), None if none or unknown.
        catch_up: as declared.
        no_overlap: as declared.
    """

    name: str
    task: str
    schedule: str
    timezone: str
    queue: str
    next_fire: datetime
    last_fired: datetime | None
    catch_up: bool
    no_overlap: bool


def _info(entry: CronJob, queue: str, now_ms: int, last_ms: int | None) -> CronInfo:
    def as_dt(ms: int) -> datetime:
        return datetime.fromtimestamp(ms / 1000, entry.timezone)

    return CronInfo(
        name=entry.name,
        task=entry.task.name,
        schedule=entry.schedule,
        timezone=str(entry.timezone),
        queue=queue,
        next_fire=as_dt(entry.next_after(now_ms)),
        last_fired=as_dt(last_ms) if last_ms is not None else None,
        catch_up=entry.catch_up,
        no_overlap=entry.no_overlap,
    )


class CronHolder(Protocol):
    """What the schedule readers need of a ``Worker``: its queues and its cron entries."""

    @property
    def queues(self) -> Sequence[str]: ...

    @property
    def cron(self) -> Sequence[CronJob]: ...


def schedule_table(worker: CronHolder, now: datetime | None = None) -> list[CronInfo]:
    """The worker's recurring jobs with their next fire times, from this host's clock
    (``last_fired`` is None: ``schedule_status`` reads it and Redis's clock)."""
    now_ms = _ms(now or datetime.now(UTC))
    return [_info(e, e.queue(worker.queues[0]), now_ms, None) for e in worker.cron]


async def schedule_status(worker: CronHolder, redis: RedisClient) -> list[CronInfo]:
    """``schedule_table`` with the last tick fired of each job, on the Redis clock."""
    seconds, micros = await redis.time()
    now_ms = seconds * 1000 + micros // 1000
    out = []
    for entry in worker.cron:
        queue = entry.queue(worker.queues[0])
        raw = await redis.hget(QueueKeys(queue).cron, entry.name)
        out.append(_info(entry, queue, now_ms, int(raw) if raw is not None else None))
    return out
