"""A worker's counters over its life, and the one way its loops report a failed call."""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from aioqueue._redis.errors import UNAVAILABLE

__all__ = ["WorkerStats"]

log = structlog.get_logger("aioqueue.worker")


@dataclass(slots=True)
class WorkerStats:
    """Counted over every run of one ``Worker`` (its ``jobs_done`` and the like)."""

    jobs_done: int = 0
    redis_errors: int = 0  # error replies from Redis the loops logged and backed off from
    outcomes_refused: int = 0  # outcomes Redis refused on their own (their jobs set aside)

    def loop_failed(
        self, loop: str, exc: Exception, retry_in: float, pending: int | None = None
    ) -> None:
        """A failed call in a loop: logged, error replies counted; the loop backs off.
        pending: outcomes waiting to be written (the ``finish`` loop's)."""
        if isinstance(exc, UNAVAILABLE):
            log.warning(
                "worker.redis_unavailable",
                loop=loop,
                error=str(exc),
                retry_in=retry_in,
                pending=pending,
            )
            return
        self.redis_errors += 1
        log.error(
            "worker.redis_error",
            loop=loop,
            error=str(exc),
            retry_in=retry_in,
            count=self.redis_errors,
            pending=pending,
        )
