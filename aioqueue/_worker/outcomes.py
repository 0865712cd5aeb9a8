"""Writes the outcomes of finished deliveries: one ``finish`` call per queue and batch.

Outcomes wait in a list while a call is in flight; outcomes of jobs that end
in the same pass of the event loop join one batch. While Redis is away the
list waits and the writer backs off, never dropping one (at a stop it is given
a last deadline, then what is left is logged: those jobs go back to others when
their leases end).

One outcome Redis refuses must not hold back the others. Redis does not roll
a Function back, so a ``finish`` that fails on its k-th item has written the
ones before it and none after. When a batch fails with an error reply, its
items are written again one by one: those already written come back stale
(refused by token, harmless), the good ones go through, and one that Redis
refuses on its own has a job whose hash is not what this version wrote (a
field changed by hand, garbage): that job is set aside (quarantined) with
the refusal as its reason, logged and counted, and the worker goes on.

Replies that say "not now" for every call (BUSY, READONLY after a failover,
MASTERDOWN, ...) are not about an item: the batch waits and is tried again,
like a batch that met a dropped connection.
"""

from __future__ import annotations

from collections.abc import Coroutine, Sequence
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import structlog
from redis.exceptions import ReadOnlyError, ResponseError

from aioqueue._hooks import NO_HOOKS, Hooks, start
from aioqueue._protocol.functions import Scripts
from aioqueue._redis.errors import UNAVAILABLE
from aioqueue._redis.retry import Backoff
from aioqueue._worker.failures import LOG_CHARS, cut, describe
from aioqueue._worker.stats import WorkerStats
from aioqueue.errors import RedisUnavailable

if TYPE_CHECKING:
    from aioqueue._worker.executor import Outcome, Running

__all__ = ["OutcomeWriter"]

log = structlog.get_logger("aioqueue.worker")

Pending = tuple["Running", "Outcome"]
Wire = tuple[str, str, str, bytes, int, int]

# outcomes written per finish call: a few ms of Redis time at most, however
# many piled up while Redis was slow or away (one unbounded call would stall it)
FINISH_BATCH = 256
RETRY_FIRST, RETRY_MOST = 0.05, 2.0  # seconds between tries of a batch while Redis is away

# error replies that refuse any call for a while, whatever its arguments
_NOT_NOW = {"BUSY", "LOADING", "READONLY", "MASTERDOWN", "NOREPLICAS", "TRYAGAIN", "CLUSTERDOWN"}


def _not_now(exc: BaseException) -> bool:
    # redis-py strips the code from some replies and names it by class (ReadOnlyError),
    # and Scripts wraps the reply in RedisRefused with its code: look at both
    for err in (exc, exc.__context__):
        if err is None:
            continue
        if isinstance(err, ReadOnlyError):
            return True
        if (getattr(err, "code", "") or describe(err).split(" ", 1)[0]) in _NOT_NOW:
            return True
    return False


class OutcomeWriter:
    """``add`` queues an outcome; ``run`` is the loop that writes them.

    ``write`` raises only when Redis is unavailable: then nothing of the batch
    needs writing again that it did write (stale items are refused by token)."""

    def __init__(self, scripts: Scripts, stats: WorkerStats, hooks: Hooks = NO_HOOKS) -> None:
        self.scripts = scripts
        self.stats = stats
        self._settled = hooks.on_settled
        self.pending: list[Pending] = []
        self._ready = anyio.Event()
        self._lock = anyio.Lock()

    def add(self, running: Running, outcome: Outcome) -> None:
        self.pending.append((running, outcome))
        self._ready.set()

    async def run(self) -> None:
        while True:
            await self._ready.wait()
            self._ready = anyio.Event()
            # jobs that end in this same pass of the event loop join the batch
            await anyio.lowlevel.checkpoint()
            await self.flush()

    async def flush(self) -> None:
        """Writes every pending outcome; retries while Redis is away."""
        async with self._lock:
            backoff = Backoff(RETRY_FIRST, RETRY_MOST)
            while self.pending:
                batch = self.pending[:FINISH_BATCH]
                del self.pending[:FINISH_BATCH]
                try:
                    await self.write(batch)
                    backoff.reset()
                except (*UNAVAILABLE, ResponseError) as exc:
                    self.pending[:0] = batch
                    retry_in = backoff.delay
                    self.stats.loop_failed("finish", exc, retry_in, pending=len(self.pending))
                    await backoff.wait()

    async def flush_remaining(self, within: float) -> None:
        """The last flush of a run: shielded from its cancellation, ``within`` seconds."""
        with anyio.move_on_after(within, shield=True) as scope:
            await self.flush()
        if scope.cancelled_caught:
            log.error("worker.outcomes_unwritten", pending=len(self.pending))

    async def write(self, batch: Sequence[Pending]) -> None:
        by_queue: dict[str, list[Pending]] = {}
        for pending in batch:
            running, outcome = pending
            if outcome.kind == "quarantine":
                reason = outcome.blob.decode("utf-8", "backslashreplace")
                await self._quarantine(running, reason)
            else:
                by_queue.setdefault(running.job.queue, []).append(pending)
        for queue, items in by_queue.items():
            try:
                accepted = await self._finish(queue, items)
            except UNAVAILABLE:
                raise
            except Exception as exc:
                log.warning(
                    "worker.finish_refused",
                    queue=queue,
                    outcomes=len(items),
                    error=cut(describe(exc), LOG_CHARS),
                    action="writing them one by one",
                )
                await self._one_by_one(queue, items)
                continue
            for (running, outcome), ok in zip(items, accepted, strict=True):
                if not ok:
                    job, kind = running.job, outcome.kind
                    log.warning("job.stale_outcome", job_id=job.id, queue=queue, outcome=kind)
                if self._settled and (rest := self._settle(running, bool(ok))) is not None:
                    await rest

    def _settle(self, running: Running, written: bool) -> Coroutine[Any, Any, None] | None:
        """Runs the on_settled hooks; returns what is left to await (an async hook's),
        None when every hook was plain: a plain hook costs the job no coroutine."""
        attempt, result = running.attempt, running.result
        if attempt is None or result is None:
            return None
        result.written = written
        return start(self._settled, attempt, result)

    async def _finish(self, queue: str, items: Sequence[Pending]) -> list[int]:
        try:
            return await self.scripts.finish(queue, [o.wire(r.job) for r, o in items])
        except UNAVAILABLE:
            raise
        except Exception as exc:
            if _not_now(exc):
                raise RedisUnavailable(f"Redis refused finish for now: {describe(exc)}") from exc
            raise

    async def _one_by_one(self, queue: str, items: Sequence[Pending]) -> None:
        for running, outcome in items:
            try:
                await self._finish(queue, [(running, outcome)])
                # a 0 here is expected: the failed batch had written it already
                if self._settled and (rest := self._settle(running, True)) is not None:
                    await rest
            except UNAVAILABLE:
                raise
            except Exception as exc:
                self.stats.outcomes_refused += 1
                reason = f"Redis refused its {outcome.kind} outcome: {describe(exc)}"
                log.error(
                    "job.outcome_refused",
                    job_id=running.job.id,
                    queue=queue,
                    outcome=outcome.kind,
                    error=cut(describe(exc), LOG_CHARS),
                    action="set aside",
                )
                await self._quarantine(running, reason)
                if self._settled and (rest := self._settle(running, False)) is not None:
                    await rest

    async def _quarantine(self, running: Running, reason: str) -> None:
        job = running.job
        try:
            await self.scripts.quarantine(job.queue, job.id, job.token, reason)
        except UNAVAILABLE:
            raise
        except Exception as exc:
            # nothing more to try: the job is left to its lease, and the next claim after it
            log.error(
                "job.outcome_dropped",
                job_id=job.id,
                queue=job.queue,
                reason=cut(reason, LOG_CHARS),
                error=cut(describe(exc), LOG_CHARS),
            )
