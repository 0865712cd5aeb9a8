"""The deliveries one run of a worker holds: claimed, running, or on their way out.

Keyed by delivery (queue, token), not by job id: a worker whose loop stalled
past a lease may be handed its own job again while the first delivery still
runs, and the two must not be mistaken for each other. The fetcher adds
claimed batches, the consumers remove what ended, liveness reads them (leases
to extend, deliveries to stop), and the drain waits until none is left.

An abort can arrive before the claim that leased the job to this worker has
answered: Redis ran the claim, then the abort, and published the abort while
the claim's reply was still on its way here. Such an abort is remembered for a
few seconds and applied when the claim's batch is held, so that the job stops
at its start instead of running to its end.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

import anyio

from aioqueue._protocol.functions import Claimed
from aioqueue._worker.dispatch import Dispatch
from aioqueue._worker.executor import Running

__all__ = ["Deliveries"]

# how long an abort of a job not held here waits for that job's claim to answer, and how
# many such aborts are kept (aborts of jobs other workers run land here too)
EARLY_ABORT_TTL = 5.0
EARLY_ABORTS_KEPT = 1024
_clock = time.monotonic


class Deliveries:
    def __init__(self, dispatch: Dispatch) -> None:
        self._dispatch = dispatch
        self._held: dict[tuple[str, str], Running] = {}
        self._all_done = anyio.Event()  # set when the last delivery held ends
        self._slot_freed = anyio.Event()
        self._early_aborts: dict[tuple[str, str], float] = {}  # (queue, job id) -> until

    def __len__(self) -> int:
        return len(self._held)

    def __iter__(self) -> Iterator[Running]:
        return iter(list(self._held.values()))

    def hold(self, claimed: Iterable[Claimed]) -> list[Running]:
        batch = [Running(job) for job in claimed]
        now = _clock()
        for running in batch:
            self._held[(running.job.queue, running.job.token)] = running
            self._dispatch.held(running)
            if self._early_aborts.pop((running.job.queue, running.job.id), 0.0) > now:
                running.stop("abort")
        if batch:
            self._all_done = anyio.Event()
        return batch

    def release(self, running: Running) -> None:
        """The delivery ended here (its outcome, if any, is on its way to Redis)."""
        job = running.job
        del self._held[(job.queue, job.token)]
        self._dispatch.released(running)
        self._slot_freed.set()
        if not self._held:
            self._all_done.set()

    def get(self, queue: str, token: str) -> Running | None:
        return self._held.get((queue, token))

    def in_queue(self, queue: str) -> list[tuple[str, str]]:
        """(job id, token) of every delivery of ``queue``: the leases to extend."""
        return [(r.job.id, token) for (q, token), r in self._held.items() if q == queue]

    def of_job(self, queue: str, job_id: str) -> list[Running]:
        """This worker's deliveries of a job: one, or two after a stall past a lease."""
        return [r for (q, _), r in self._held.items() if q == queue and r.job.id == job_id]

    def abort(self, queue: str, job_id: str) -> None:
        """Stops this worker's deliveries of the job; if it holds none, the job's claim
        may not have answered yet: the abort waits for it a while (see above)."""
        held = self.of_job(queue, job_id)
        for running in held:
            running.stop("abort")
        if held:
            return
        now = _clock()
        if len(self._early_aborts) >= EARLY_ABORTS_KEPT:
            live = {k: until for k, until in self._early_aborts.items() if until > now}
            while len(live) >= EARLY_ABORTS_KEPT:  # the oldest go first
                del live[next(iter(live))]
            self._early_aborts = live
        self._early_aborts[(queue, job_id)] = now + EARLY_ABORT_TTL

    def stop_all(self, reason: str) -> None:
        for running in self:
            running.stop(reason)

    async def slot_freed(self) -> None:
        """Returns once a delivery held now (or later) has ended."""
        self._slot_freed = anyio.Event()
        await self._slot_freed.wait()

    async def all_done(self) -> None:
        """Returns once no delivery is held (at once when none is)."""
        if self._held:
            await self._all_done.wait()
