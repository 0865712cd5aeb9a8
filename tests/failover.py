"""A producer/worker run around a failover, shared by the cluster and sentinel tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio

from aioqueue import Job, JobNotFound, NotReplicated, Queue, RedisUnavailable, ResultTimeout
from tests import tasks


@dataclass
class Produced:
    """Jobs whose enqueue returned, split at the moment the primary was killed."""

    before: list[Job[Any]] = field(default_factory=list)
    after: list[Job[Any]] = field(default_factory=list)
    refused: int = 0  # enqueues that raised (unavailable, or not replicated)
    killed: bool = False

    def add(self, job: Job[Any]) -> None:
        (self.after if self.killed else self.before).append(job)


async def produce(queue: Queue, out: Produced, stop: anyio.Event) -> None:
    """Enqueues one job at a time until ``stop``; at most ~200 jobs/s to spare the CPU."""
    n = 0
    while not stop.is_set():
        n += 1
        try:
            out.add(await queue.enqueue(tasks.add, n, 0))
        except (RedisUnavailable, NotReplicated):
            out.refused += 1
            await anyio.sleep(0.05)
        await anyio.sleep(0.005)


async def outcomes(jobs: list[Job[Any]], timeout: float) -> tuple[int, int]:
    """(completed, lost): lost jobs are gone from Redis, or never finish in ``timeout``."""
    done = lost = 0
    deadline = time.monotonic() + timeout
    for job in jobs:
        try:
            await job.result(timeout=max(0.1, deadline - time.monotonic()))
            done += 1
        except (JobNotFound, ResultTimeout):
            lost += 1
    return done, lost


async def run_through_failover(
    queues: list[Queue],
    kill: Callable[[], None],
    revive: Callable[[], None],
    *,
    settle: float = 0.5,
) -> list[Produced]:
    """Producers on ``queues`` run; the primary is killed; once the new primary
    acknowledges plain enqueues, the dead node is restarted (it rejoins as a
    replica: durable enqueues need one); they run until each has had 20
    enqueues acknowledged after the kill."""
    produced = [Produced() for _ in queues]
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        for queue, out in zip(queues, produced, strict=True):
            tg.start_soon(produce, queue, out, stop)
        await anyio.sleep(settle)
        kill()
        for out in produced:
            out.killed = True
        with anyio.fail_after(60):
            while all(len(out.after) < 20 for out in produced):
                await anyio.sleep(0.05)
            await anyio.to_thread.run_sync(revive)
            while any(len(out.after) < 20 for out in produced):
                await anyio.sleep(0.05)
        stop.set()
    return produced
