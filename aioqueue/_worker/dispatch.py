"""Fair dispatch: how many deliveries of each kind a worker may claim next.

I/O-bound jobs wait most of the time, so a worker runs ``concurrency`` of them
at once and, while they are short, holds ``prefetch`` more so that its
consumers never wait for the next claim. CPU-bound jobs are the opposite: a
process runs as many as it has CPU slots (``cpu_slots``, or its process pool's
size), and a held one that does not run is one another process could have
run. So they are never prefetched: the claim takes one only into a free CPU
slot and only where it starts at once (not behind ``concurrency`` jobs held
already), and moves the rest aside for a worker that can (see ``claim`` in
the Lua library). A burst of N CPU-bound jobs on N processes runs N at once.

Prefetch waits for the first I/O-bound job's time: a worker that started by
claiming ``concurrency + prefetch`` long jobs would hoard half of them.

Waking: an idle worker with a free CPU slot blocks on its queues' ``wake``
and ``cwake`` lists; one with every slot busy only on ``wake`` (a ``cwake``
signal is for jobs it could not take, and would wake it in a loop). When one
of its CPU jobs ends while it blocks that way (or one of its consumers frees
up while CPU jobs were seen waiting aside), it pushes a token to its own
``nudge`` list, which it blocks on too, and claims again at once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import anyio
import structlog

from aioqueue._protocol.keys import QueueKeys
from aioqueue._redis.connect import RedisClient
from aioqueue._redis.errors import UNAVAILABLE
from aioqueue._redis.retry import Backoff, deadline
from aioqueue._worker.executor import Running
from aioqueue._worker.settings import WorkerSettings
from aioqueue.task import Task

__all__ = ["Dispatch"]

log = structlog.get_logger("aioqueue.worker")

PREFETCH_JOB_TIME = 0.02  # mean I/O-bound job seconds under which a worker prefetches
MEAN_WINDOW = 64  # jobs over which the mean job time moves
NUDGE_TTL_MS = 60_000  # a nudge token left by a worker that died expires
NUDGE_WITHIN = 10.0


class Dispatch:
    """One run's accounting of held deliveries by kind (made by ``WorkerRun``)."""

    def __init__(self, settings: WorkerSettings, tasks: Mapping[str, Task[Any, Any]]) -> None:
        cpu = [t for t in tasks.values() if t.cpu]
        in_process = any(t.executor != "process" for t in cpu)
        pooled = any(t.executor == "process" for t in cpu)
        self.cpu_tasks = tuple(sorted(t.name for t in cpu))
        # a worker with both kinds shares the slots (the pool still runs at most its
        # size at once; thread jobs beyond cpu_slots would share the GIL)
        self.cpu_limit = (settings.cpu_slots if in_process else 0) + (
            settings.pool_size if pooled else 0
        )
        self._concurrency = settings.concurrency
        self._prefetch = settings.effective_prefetch
        self.cpu_held = 0
        self.held_total = 0
        self.mean_io_time: float | None = None  # not known before a job ran
        self._io_seen = 0
        self.blocked_full = False  # the fetcher blocks without cwake
        self.cpu_waiting = False  # the last claim left CPU-bound jobs aside
        self._cpu_freed = anyio.Event()

    def capacity(self) -> int:
        """Deliveries the worker may hold: running plus prefetched.

        Prefetch keeps consumers busy while the next claim is in flight, which is
        what short jobs need; with long jobs it would only hoard jobs that another
        worker could start, so it is used only once I/O-bound jobs have shown to
        be short on average. CPU-bound jobs do not count in that mean: they are
        never prefetched.
        """
        if self.mean_io_time is not None and self.mean_io_time < PREFETCH_JOB_TIME:
            return self._concurrency + self._prefetch
        return self._concurrency

    def run_free(self) -> int:
        """Jobs that would start at once if claimed now: consumers not taken."""
        return max(0, self._concurrency - self.held_total)

    def cpu_free(self) -> int:
        """CPU-bound jobs this worker could start at once now."""
        return max(0, min(self.cpu_limit - self.cpu_held, self.run_free()))

    def held(self, running: Running) -> None:
        self.held_total += 1
        if running.job.cpu:
            self.cpu_held += 1

    def ran(self, running: Running, elapsed: float) -> None:
        """A job ran for ``elapsed`` seconds: I/O-bound ones move the mean."""
        if running.job.cpu:
            return
        # the plain mean of the first jobs, then a moving one: a mean that starts
        # at 0 and moves by 1/64 would call long jobs short for dozens of jobs
        self._io_seen += 1
        mean = self.mean_io_time or 0.0
        self.mean_io_time = mean + (elapsed - mean) / min(self._io_seen, MEAN_WINDOW)

    def released(self, running: Running) -> None:
        """The delivery is no longer held (ended, or handed back)."""
        self.held_total -= 1
        if running.job.cpu:
            self.cpu_held -= 1
        # A CPU job's end always nudges (as often as CPU jobs end, no more); a
        # consumer freed by an I/O job only when CPU jobs were seen waiting: an
        # I/O-bound worker with every consumer busy must not claim on each end.
        # (Jobs moved aside since, by others, wake the workers listening on cwake.)
        if self.blocked_full and self.cpu_free() > 0 and (running.job.cpu or self.cpu_waiting):
            self._cpu_freed.set()

    def wake_keys(self, keys: QueueKeys) -> list[str]:
        """The wake lists of one queue an idle fetcher blocks on now."""
        if not self.cpu_tasks or self.cpu_free() > 0:
            return [keys.wake, keys.cwake]
        return [keys.wake]

    def cluster_sources(self, keys: list[QueueKeys], nudge: str) -> list[Callable[[], list[str]]]:
        """Per queue (in its own slot), what its cluster wake task blocks on; the
        nudge list lives in the first queue's slot."""

        def source(queue_keys: QueueKeys, extra: list[str]) -> Callable[[], list[str]]:
            return lambda: self.wake_keys(queue_keys) + extra

        return [source(k, [nudge] if i == 0 else []) for i, k in enumerate(keys)]

    def blocking(self) -> None:
        """The fetcher is about to block: from now on a freed CPU slot must nudge it
        if it blocks without ``cwake`` (checked here, in the same loop pass)."""
        self.blocked_full = bool(self.cpu_tasks) and self.cpu_free() == 0

    def awake(self) -> None:
        self.blocked_full = False

    async def nudge_loop(self, redis: RedisClient, nudge: str) -> None:
        """Pushes the worker's own wake token when a CPU slot frees while it blocks full."""
        backoff = Backoff(0.05, 2.0)
        while True:
            await self._cpu_freed.wait()
            self._cpu_freed = anyio.Event()
            if not self.blocked_full:
                continue  # the fetcher is awake already: it sees the free slot
            try:
                with deadline(NUDGE_WITHIN):
                    async with redis.pipeline(transaction=False) as pipe:
                        pipe.rpush(nudge, 1)
                        pipe.pexpire(nudge, NUDGE_TTL_MS)
                        await pipe.execute()
                backoff.reset()
            except UNAVAILABLE as exc:
                log.warning("worker.nudge_failed", error=str(exc), retry_in=backoff.delay)
                self._cpu_freed.set()  # try again: the fetcher still waits for it
                await backoff.wait()
