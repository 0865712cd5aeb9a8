"""The deliveries one run of a worker holds: claimed, running, or on their way out.

Keyed by delivery (queue, token), not by job id: a worker whose loop stalled
past a lease may be handed its own job again while the first delivery still
runs, and the two must not be mistaken for each other. The fetcher adds
claimed batches, the consumers remove what ended, liveness reads them (leases
to extend, deliveries to stop), and the drain waits until none is left.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import anyio

from aioqueue._protocol.functions import Claimed
from aioqueue._worker.dispatch import Dispatch
from aioqueue._worker.executor import Running

__all__ = ["Deliveries"]


class Deliveries:
    def __init__(self, dispatch: Dispatch) -> None:
        self._dispatch = dispatch
        self._held: dict[tuple[str, str], Running] = {}
        self._all_done = anyio.Event()  # set when the last delivery held ends
        self._slot_freed = anyio.Event()

    def __len__(self) -> int:
        return len(self._held)

    def __iter__(self) -> Iterator[Running]:
        return iter(list(self._held.values()))

    def hold(self, claimed: Iterable[Claimed]) -> list[Running]:
        batch = [Running(job) for job in claimed]
        for running in batch:
            self._held[(running.job.queue, running.job.token)] = running
            self._dispatch.held(running)
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
