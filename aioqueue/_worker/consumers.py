"""The consumers: long-lived tasks, up to ``concurrency``, that run the deliveries handed to them.

Consumers are started on demand: a task per job costs several times more
than handing a job to a waiting one (``handoff.py``). Each runs a delivery
through the ``Executor`` and passes what it decided to the ``OutcomeWriter``.
Their task group is the run's ``jobs`` group: it ends once the fetcher has
closed the handoff and every delivery in it has been run or handed back.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType

import anyio
import anyio.lowlevel

from aioqueue._protocol.functions import Claimed
from aioqueue._worker.deliveries import Deliveries
from aioqueue._worker.dispatch import Dispatch
from aioqueue._worker.executor import RELEASE, Executor, Outcome, Running
from aioqueue._worker.handoff import Handoff
from aioqueue._worker.outcomes import OutcomeWriter
from aioqueue._worker.stats import WorkerStats

__all__ = ["Consumers"]

STREAK = 32  # jobs a consumer takes in a row before it yields to the loop's other tasks


class Consumers:
    """``async with consumers:`` the jobs task group; ``take`` hands a claimed batch over."""

    def __init__(
        self,
        executor: Executor,
        deliveries: Deliveries,
        dispatch: Dispatch,
        outcomes: OutcomeWriter,
        stats: WorkerStats,
        concurrency: int,
        *,
        stopping: anyio.Event,
        ended: Callable[[], None],
    ) -> None:
        self.executor = executor
        self.deliveries = deliveries
        self.dispatch = dispatch
        self.outcomes = outcomes
        self.stats = stats
        self.concurrency = concurrency
        self._stopping = stopping
        self._ended = ended  # told after each delivery that ended (the max_jobs check)
        self.handoff: Handoff[Running] = Handoff()
        self._group = anyio.create_task_group()
        self._count = 0

    async def __aenter__(self) -> Consumers:
        await self._group.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        return await self._group.__aexit__(exc_type, exc, tb)

    def take(self, claimed: list[Claimed]) -> None:
        """Holds a claimed batch and hands all of it over in this loop pass."""
        batch = self.deliveries.hold(claimed)
        while self._count < min(len(self.deliveries), self.concurrency):
            self._count += 1
            self._group.start_soon(self._consume)
        for running in batch:
            self.handoff.put(running)

    def close(self) -> None:
        """No more deliveries: each consumer ends once the handoff is empty."""
        self.handoff.close()

    async def _consume(self) -> None:
        handoff = self.handoff
        streak = 0
        while True:
            # Take a queued job without a checkpoint: a checkpoint per item cost
            # more than a no-op job. Every STREAK jobs in a row the consumer still
            # yields, so the loop's other tasks run.
            try:
                if streak >= STREAK:
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
            if self._stopping.is_set():
                # stopping (a signal, max_jobs): claimed but not started goes back now
                self._finished(running, RELEASE)
                continue
            outcome: Outcome | None = None
            started = time.perf_counter()
            try:
                outcome = await self.executor.run(running)
            finally:
                self.dispatch.ran(running, time.perf_counter() - started)
                self._finished(running, outcome)

    def _finished(self, running: Running, outcome: Outcome | None) -> None:
        self.deliveries.release(running)
        if outcome is not None:
            self.outcomes.add(running, outcome)
        self.stats.jobs_done += 1
        self._ended()
