"""The per-job context a running task can read: ``current_job()``."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from aioqueue.errors import AioqueueError

__all__ = ["JobContext", "current_job"]


@dataclass(frozen=True, slots=True)
class JobContext:
    """Who and where a job is: its id, attempt, queue, task, worker and the
    worker's shared ``state`` (what startup hooks put there, e.g. an HTTP client).

    Attributes:
        job_id: the job's id.
        queue: its queue.
        task: the task's name.
        attempt: this attempt, from 1.
        max_attempts: the attempts it may have in all.
        worker_id: the id of the worker running it.
        state: the worker's ``state`` dict, shared by all its jobs.
    """

    job_id: str
    queue: str
    task: str
    attempt: int
    max_attempts: int
    worker_id: str
    state: dict[str, Any]


_current: ContextVar[JobContext] = ContextVar("aioqueue_job")


def current_job() -> JobContext:
    """The context of the job running in this task (or its thread).

    Raises:
        AioqueueError: called outside a running job.
    """
    try:
        return _current.get()
    except LookupError:
        raise AioqueueError("current_job() called outside a running job") from None
