"""The worker's log line for each attempt, as the first middleware of every worker.

It is the seam's first user: what it logs is what any middleware can see.
"""

from __future__ import annotations

import logging

import structlog

from aioqueue._worker.failures import log_text
from aioqueue.middleware import Attempt, AttemptResult, Middleware

__all__ = ["JobLog"]

_logger = structlog.get_logger("aioqueue.worker")

# why a running attempt was stopped, by how it ended
_STOPPED = {"aborted": "abort", "released": "shutdown", "lost": "lost"}


class JobLog(Middleware):
    """``job.completed``, ``job.retrying``, ``job.failed`` or ``job.stopped``."""

    def __init__(self) -> None:
        # the logger as configured when the run starts, resolved once: a lazy proxy
        # resolves itself on every call, a cost paid per job here
        self.log = _logger.bind()
        # info lines filtered out (a level of warning): a completed job's line is not
        # even built. Loggers that cannot say are asked every time, by calling them.
        enabled = getattr(self.log, "is_enabled_for", None)
        self.info = True if enabled is None else bool(enabled(logging.INFO))

    def after_attempt(self, attempt: Attempt, result: AttemptResult) -> None:
        log = self.log
        outcome = result.outcome
        if outcome == "complete":
            if not self.info:
                return
            log.info(
                "job.completed",
                job_id=attempt.job_id,
                task=attempt.task,
                queue=attempt.queue,
                attempt=attempt.attempt,
                duration_ms=round(result.duration * 1000, 3),
            )
        elif outcome in _STOPPED:
            if not self.info:
                return
            log.info(
                "job.stopped",
                job_id=attempt.job_id,
                task=attempt.task,
                queue=attempt.queue,
                reason=_STOPPED[outcome],
            )
        elif result.retry_in is not None:
            log.warning(
                "job.retrying",
                job_id=attempt.job_id,
                task=attempt.task,
                queue=attempt.queue,
                attempt=attempt.attempt,
                retry_in=round(result.retry_in, 3),
                duration_ms=round(result.duration * 1000, 3),
                error=log_text(result.error_info) if result.error_info else "",
            )
        else:
            log.error(
                "job.failed",
                job_id=attempt.job_id,
                task=attempt.task,
                queue=attempt.queue,
                attempt=attempt.attempt,
                error=log_text(result.error_info) if result.error_info else "",
            )
