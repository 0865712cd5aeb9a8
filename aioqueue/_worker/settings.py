"""A worker's settings: one frozen object whose derived values follow its final inputs.

Inputs come from code (``Worker(concurrency=...)``); ``aioqueue run`` then
overrides some of them with its flags and ``AIOQUEUE_*`` variables (see
``aioqueue._cli.runner``). Every change goes through ``replace``, which builds a new
object and derives again, so a derived value can never lag behind what it is
derived from (``--concurrency 1`` once left the prefetch of the constructor's
concurrency 100 in place):

    effective_prefetch   prefetch, else concurrency (0 for concurrency 1: a worker
                         told to run one job at a time holds one)
    heartbeat_interval   heartbeat, else lease / 3
    pool_size            process_pool, else the CPUs this process may run on

Bad values fail here, at the boundary, with ``ConfigurationError``: a NaN
lease or an infinite grace would otherwise surface as a hung or spinning loop.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aioqueue._protocol.durations import count, seconds
from aioqueue._protocol.keys import EVENTS_MAXLEN, check_queue_name
from aioqueue._redis.connect import DEFAULT_URL
from aioqueue.errors import ConfigurationError
from aioqueue.task import DEFAULT_QUEUE

__all__ = ["SettingsView", "WorkerSettings", "available_cpus", "env_var"]


def env_var(option: str) -> str:
    """The environment variable of ``aioqueue run``'s option (``max_jobs_per_child`` or
    ``--max-jobs-per-child``): the flag reads it, and supervised children get it."""
    return "AIOQUEUE_" + option.lstrip("-").replace("-", "_").upper()


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, not the machine's count)."""
    counter = getattr(os, "process_cpu_count", None)  # Python 3.13+
    if counter is not None:
        return max(1, counter() or 1)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """Everything a worker runs with that flags or variables may change.

    Frozen and checked once: ``Worker(...)`` builds it from its arguments,
    ``aioqueue run`` replaces fields from its flags and ``AIOQUEUE_*`` variables
    (``Worker.configure``). The fields mean what the ``Worker`` arguments of the
    same name mean; the three derived ones are computed here, once.

    Attributes:
        redis_url: the Redis to use.
        queues: the queues served, highest priority first.
        concurrency: most jobs running at once.
        prefetch: I/O-bound deliveries held ahead of a free slot (None: derived).
        cpu_slots: CPU-bound deliveries (``@task(cpu=True)``, plain ``def`` tasks)
            held at once, never prefetched.
        process_pool: processes for ``@task(executor="process")`` tasks (None: CPUs).
        lease: seconds a delivery is held without a heartbeat.
        heartbeat: seconds between heartbeats (None: derived).
        grace: seconds running jobs get on stop.
        job_timeout: default seconds an attempt may run.
        max_attempts: default attempts of a job.
        result_ttl: default seconds a result is kept.
        sync_threads: threads for plain ``def`` tasks.
        max_jobs: stop after this many jobs (None: never).
        max_result_size: largest encoded result in bytes (None: no limit).
        burst: stop once the queues are drained.
        events_maxlen: entries each queue's event stream keeps (about; 0: none written).
        effective_prefetch: the prefetch used: ``prefetch``, else ``concurrency``
            (0 for concurrency 1).
        heartbeat_interval: the heartbeat used: ``heartbeat``, else ``lease / 3``.
        pool_size: the process pool used: ``process_pool``, else the CPUs available.
    """

    redis_url: str = DEFAULT_URL
    queues: tuple[str, ...] = (DEFAULT_QUEUE,)
    concurrency: int = 100
    prefetch: int | None = None
    cpu_slots: int = 1
    process_pool: int | None = None
    lease: float = 30.0
    heartbeat: float | None = None
    grace: float = 30.0
    job_timeout: float = 300.0
    max_attempts: int = 3
    result_ttl: float = 3600.0
    sync_threads: int = 40
    max_jobs: int | None = None
    max_result_size: int | None = 1 << 20
    burst: bool = False
    events_maxlen: int = EVENTS_MAXLEN

    effective_prefetch: int = field(init=False)
    heartbeat_interval: float = field(init=False)
    pool_size: int = field(init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.redis_url, str):  # '' is allowed: aioqueue run may give one
            raise ConfigurationError(f"redis_url must be a string, got {self.redis_url!r}")
        queues = (self.queues,) if isinstance(self.queues, str) else tuple(self.queues)
        if not queues:
            raise ConfigurationError("a worker needs at least one queue")
        object.__setattr__(self, "queues", tuple(check_queue_name(q) for q in queues))
        for name, least in (("concurrency", 1), ("cpu_slots", 1), ("sync_threads", 1)):
            count(getattr(self, name), name, least=least)
        count(self.max_attempts, "max_attempts", least=1)
        count(self.events_maxlen, "events_maxlen", least=0)
        for name, least in (
            ("prefetch", 0),
            ("process_pool", 1),
            ("max_jobs", 1),
            ("max_result_size", 1),
        ):
            if getattr(self, name) is not None:
                count(getattr(self, name), name, least=least)
        # seconds as floats from here on (a timedelta given for a duration included)
        for name, zero in (("lease", False), ("grace", True), ("job_timeout", False)):
            object.__setattr__(self, name, seconds(getattr(self, name), name, zero=zero))
        ttl = seconds(self.result_ttl, "result_ttl", negative=True, timedelta_ok=False)
        object.__setattr__(self, "result_ttl", ttl)
        if self.heartbeat is not None:
            object.__setattr__(self, "heartbeat", seconds(self.heartbeat, "heartbeat", zero=False))
            if self.heartbeat >= self.lease:
                raise ConfigurationError(
                    f"heartbeat ({self.heartbeat}s) must be shorter than the lease"
                    f" ({self.lease}s): leases would expire between heartbeats"
                )
        if not isinstance(self.burst, bool):
            raise ConfigurationError(f"burst must be True or False, got {self.burst!r}")
        prefetch = self.prefetch
        if prefetch is None:
            prefetch = self.concurrency if self.concurrency > 1 else 0
        object.__setattr__(self, "effective_prefetch", prefetch)
        beat = self.heartbeat if self.heartbeat is not None else self.lease / 3
        object.__setattr__(self, "heartbeat_interval", beat)
        pool = self.process_pool if self.process_pool is not None else available_cpus()
        object.__setattr__(self, "pool_size", pool)

    @classmethod
    def from_arguments(cls, arguments: Mapping[str, Any]) -> WorkerSettings:
        """The settings among a caller's arguments (``Worker.__init__``'s locals())."""
        names = {f.name for f in dataclasses.fields(cls) if f.init}
        given = {name: value for name, value in arguments.items() if name in names}
        queues = given.get("queues")
        if queues is not None and not isinstance(queues, str):
            given["queues"] = tuple(queues)  # an iterable of any kind, once
        return cls(**given)

    def replace(self, **changes: Any) -> WorkerSettings:
        """A copy with ``changes`` applied (None: keep the current value), derived anew."""
        given = {name: value for name, value in changes.items() if value is not None}
        inputs = {f.name for f in dataclasses.fields(self) if f.init}
        unknown = set(given) - inputs
        if unknown:
            raise ConfigurationError(f"not a worker setting: {', '.join(sorted(unknown))}")
        if "queues" in given and not isinstance(given["queues"], str):
            given["queues"] = tuple(given["queues"])
        return dataclasses.replace(self, **given)

    def with_queues(self, queues: Iterable[str]) -> WorkerSettings:
        """A copy serving these queues."""
        return self.replace(queues=tuple(queues))


class SettingsView:
    """The settings as read-only attributes of the object that holds them (the Worker)."""

    settings: WorkerSettings

    @property
    def redis_url(self) -> str:
        return self.settings.redis_url

    @property
    def queues(self) -> list[str]:
        return list(self.settings.queues)

    @property
    def concurrency(self) -> int:
        return self.settings.concurrency

    @property
    def prefetch(self) -> int:
        return self.settings.effective_prefetch

    @property
    def lease(self) -> float:
        return self.settings.lease

    @property
    def heartbeat_interval(self) -> float:
        return self.settings.heartbeat_interval

    @property
    def grace(self) -> float:
        return self.settings.grace

    @property
    def burst(self) -> bool:
        return self.settings.burst

    @property
    def max_jobs(self) -> int | None:
        return self.settings.max_jobs

    @property
    def max_result_size(self) -> int | None:
        return self.settings.max_result_size

    @property
    def sync_threads(self) -> int:
        return self.settings.sync_threads
