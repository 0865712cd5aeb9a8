"""One typed wrapper per Function of the Redis Functions library (``lua/``).

Loading the library and the calls themselves (deadlines, the shared lane,
reloading after a restart) are ``aioqueue._protocol.library``'s; its names are
re-exported here, where the rest of the package has always imported them from.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from aioqueue._protocol import versions
from aioqueue._protocol.garbage import log_set_aside
from aioqueue._protocol.library import (
    LIBRARY,
    TESTING_CLOCK,
    TESTING_LIBRARY,
    VERSION,
    FunctionCalls,
)
from aioqueue._redis.lane import Started
from aioqueue.errors import NotReplicated

__all__ = [
    "LIBRARY",
    "PROMOTE_LIMIT",
    "TESTING_CLOCK",
    "TESTING_LIBRARY",
    "VERSION",
    "ClaimReply",
    "Claimed",
    "EnqueueWire",
    "Scripts",
]


# due jobs and expired leases moved per claim: ~2 ms of Redis time on the 2-core box, so a
# burst of a million due jobs never shows as a slow command
PROMOTE_LIMIT = 200


EnqueueWire = tuple[str, bytes, int, int, str]


@dataclass(frozen=True, slots=True)
class Claimed:
    """One delivery handed to a worker by ``claim``. lock: the job's lock field (b'': none)."""

    queue: str
    id: str
    token: str
    attempt: int
    lost: int
    payload: bytes | None
    lock: bytes = b""
    cpu: bool = False  # a job of one of the claiming worker's CPU-bound tasks
    wait: float | None = None  # seconds from due to claim, when the claim reply says


@dataclass(frozen=True, slots=True)
class ClaimReply:
    """What one ``claim`` call did.

    wait_ms: how long an idle worker may block (-1: nothing pending); promoted,
    reaped: due jobs and expired leases it moved to the ready list (each at most
    the call's promote limit); set_aside: lines '<key>\\0<reason>' of things set
    aside since the last claim that took them (logged by ``claim``);
    waiting_cpu: CPU-bound jobs left aside for workers with a free CPU slot.
    """

    wait_ms: float
    jobs: list[Claimed]
    promoted: int
    reaped: int
    set_aside: list[bytes]
    waiting_cpu: int = 0


class Scripts(FunctionCalls):
    """The typed wrappers: one method per Function, its arguments and reply as Python."""

    async def load(self, *, worker: bool = False) -> None:
        """Loads the library; a worker also deletes the old versions no live
        worker runs (see ``aioqueue._protocol.versions``)."""
        await super().load(worker=worker)
        if worker:
            await versions.collect(self)

    async def check_layout(self, queues: tuple[str, ...] | list[str]) -> None:
        """``ConfigurationError`` for a queue stored in a newer data layout."""
        await versions.check_layout(self, queues)

    async def library_beat(self, worker: str, *, leaving: bool = False) -> None:
        """Registers ``worker`` as one that runs this library version (leaving: no more)."""
        await versions.beat(self, worker, leaving=leaving)

    async def enqueue(
        self,
        queue: str,
        jobs: list[EnqueueWire],
        max_length: int = 0,
        *,
        replicated: float | None = None,
        fresh_ids: bool = False,
        first: Started | None = None,
    ) -> list[str]:
        """jobs: (id, payload, delay_ms, at_ms, lock). Returns 'new' or the existing status.

        lock: '' or the mode letter ('w' wait, 'd' drop) then the lock's name.
        replicated: wait up to this many seconds for one replica to acknowledge.

        max_length > 0 refuses the whole batch (``QueueFull``) when the queue's
        queued and scheduled jobs plus the batch would exceed it.
        replicated: seconds to wait for one replica to acknowledge the write;
        ``NotReplicated`` when none did.
        fresh_ids: the ids were made up for this call, so a job found under one
        after the call was sent again (a lost link) is the one it stored: 'new'.
        first: ``start_enqueue``'s for this one job, which failed: its first try.
        """
        sent: list[int] = []
        if replicated is None and max_length == 0 and len(jobs) == 1:
            # concurrent single enqueues to one queue become one call (an id
            # already stored is not stored twice, so a lost link retries it)
            status: bytes = await self._merged("enqueue", queue, (0,), jobs[0], 1, sent, first)
            return ["new" if sent and fresh_ids else status.decode()]
        flat: list[Any] = [max_length]
        for job in jobs:
            flat.extend(job)
        if replicated is None:
            out = await self._call("enqueue", queue, *flat, sent=sent)
            if sent and fresh_ids:
                return ["new"] * len(out)
        else:
            out, acked = await self._call_and_wait("enqueue", queue, replicated, *flat)
            if acked < 1:
                raise NotReplicated(
                    f"no replica acknowledged the enqueue to {queue!r} within {replicated}s",
                    job_ids=[job[0] for job in jobs],
                )
        return [s.decode() for s in out]

    def start_enqueue(self, queue: str, job: EnqueueWire) -> Started | None:
        """One job's enqueue (no length limit, not replicated), queued at once to be
        merged with concurrent ones: await the future for b'new' or the existing
        job's status; on any failure pass this as ``enqueue(..., first=)``, which
        retries and raises as it does for a call of its own. None: call ``enqueue``."""
        lane = self._lane
        if lane is None or lane.closed:
            return None
        made = self._enqueue_heads.get(queue)
        if made is None:
            made = self._enqueue_heads[queue] = self._merge_head("enqueue", queue, (0,))
        return lane.start_merged(made[0], made[1], job, 1, timeout=self.timeout)

    async def claim(
        self,
        queue: str,
        n: int,
        worker: str,
        lease_ms: int,
        promote_limit: int = PROMOTE_LIMIT,
        *,
        cpu_free: int = 0,
        cpu_tasks: tuple[str, ...] = (),
        run_free: int | None = None,
    ) -> ClaimReply:
        """Up to n deliveries, and the ms an idle worker may wait (-1: nothing pending).

        cpu_tasks: the worker's CPU-bound tasks, of which at most cpu_free jobs
        are taken, and only among the first run_free jobs of the claim (see
        claim in the Lua library). The wait has microsecond precision: a worker
        waiting for a due time must not add up to a millisecond of rounding to
        it. What the call set aside (and earlier calls of any Function did) is
        logged here.
        """
        # a claim sent again after a lost reply returns the same deliveries (see the
        # Lua claim); so does the next claim after one whose outcome is unknown
        claim_id = self._claim_ids.pop(queue, None) or secrets.token_hex(8)
        run = n if run_free is None else run_free
        try:
            out = await self._call(
                "claim",
                queue,
                n,
                worker,
                lease_ms,
                promote_limit,
                claim_id,
                cpu_free,
                run,
                *cpu_tasks,
            )
        except BaseException:
            self._claim_ids[queue] = claim_id
            raise
        wait_us, promoted, reaped = int(out[0]), int(out[1]), int(out[2])
        waiting_cpu, news = int(out[3]), int(out[4])
        first = 5 + news
        lines = list(out[5:first])
        if lines:
            log_set_aside(queue, lines)
        # ids are checked by the Function: valid UTF-8, no spaces or NUL
        jobs = [
            Claimed(
                queue,
                out[i].decode(),
                out[i + 1].decode(),
                int(out[i + 2]),
                int(out[i + 3]),
                out[i + 4],
                out[i + 5],
                out[i + 6] == 1,
                out[i + 7] / 1000 if out[i + 7] >= 0 else None,
            )
            for i in range(first, len(out), 8)
        ]
        wait_ms = wait_us / 1000 if wait_us >= 0 else -1.0
        return ClaimReply(wait_ms, jobs, promoted, reaped, lines, waiting_cpu)

    async def finish(
        self, queue: str, items: list[tuple[str, str, str, bytes, int, int]]
    ) -> list[int]:
        """items: (id, token, outcome, blob, ttl_ms, delay_ms).

        Returns 1 per item, 0 where the token no longer owns the job (stale), 2
        where the job no longer parsed and was set aside instead.
        """
        flat: list[Any] = []
        for item in items:
            flat.extend(item)
        return [int(x) for x in await self._call("finish", queue, *flat)]

    async def heartbeat(
        self,
        queue: str,
        worker: str,
        lease_ms: int,
        info: bytes,
        registry_ttl_ms: int,
        held: list[tuple[str, str]],
    ) -> list[tuple[str, str]]:
        """Extends held leases; returns (token, 'abort' | 'lost') for deliveries to stop."""
        flat: list[Any] = []
        for item in held:
            flat.extend(item)
        out = await self._call("heartbeat", queue, worker, lease_ms, info, registry_ttl_ms, *flat)
        return [(out[i].decode(), out[i + 1].decode()) for i in range(0, len(out), 2)]

    async def deregister(self, queue: str, worker: str) -> None:
        await self._call("deregister", queue, worker)

    async def abort(self, queue: str, job_id: str, ttl_ms: int) -> str | None:
        # not sent twice: a second abort would report the first one's 'aborted'
        out = await self._call("abort", queue, job_id, ttl_ms, idempotent=False)
        return out.decode() if out else None

    async def watch(self, queue: str, job_id: str, client: str) -> tuple[str, bytes]:
        """The job's state, and ``client`` registered as its waiter unless it ended."""
        status, blob = await self._merged("watch", queue, (client,), (job_id,), 2)
        return status.decode(), blob

    async def watch_many(
        self, queue: str, job_ids: list[str], client: str
    ) -> list[tuple[str, bytes]]:
        """``watch`` of many jobs in one call: (status, blob) per id, in order."""
        out = await self._call("watch", queue, client, *job_ids)
        return [(out[i].decode(), out[i + 1]) for i in range(0, len(out), 2)]

    async def unwatch(self, queue: str, job_ids: list[str], client: str) -> int:
        """Forgets ``client`` as a waiter of these jobs; how many it waited for."""
        if not job_ids:
            return 0
        return sum(int(x) for x in await self._call("unwatch", queue, client, *job_ids))

    async def quarantine(self, queue: str, job_id: str, token: str, reason: str) -> bool:
        return bool(await self._call("quarantine", queue, job_id, token, reason))

    # not sent twice: a second send would count 0 for the jobs the first one moved
    async def requeue(self, queue: str, ids: list[str]) -> int:
        return int(await self._call("requeue", queue, *ids, idempotent=False)) if ids else 0

    async def purge(self, queue: str, ids: list[str]) -> int:
        return int(await self._call("purge", queue, *ids, idempotent=False)) if ids else 0

    async def cron_fire(
        self,
        queue: str,
        name: str,
        tick_ms: int,
        job_id: str,
        payload: bytes,
        lock: str,
        definition: str = "",
    ) -> tuple[str, int]:
        """Fires one cron tick unless another worker did: ('fired' | 'dup' | 'overlap' |
        'superseded', Redis time in ms) or ('early', ms until the tick by the Redis clock).

        definition: the caller's schedule; 'superseded' when ``name`` has another
        one now (see ``cron_define``); '' is not checked.
        """
        status, ms = await self._call(
            "cron_fire", queue, name, tick_ms, job_id, payload, lock, definition
        )
        return status.decode(), int(ms)

    async def cron_define(self, queue: str, name: str, definition: str) -> str | None:
        """Registers the schedule of cron job ``name`` (the newest wins); returns the
        definition it replaced, if any."""
        previous = await self._call("cron_define", queue, name, definition)
        return previous.decode("utf-8", "backslashreplace") if previous else None
