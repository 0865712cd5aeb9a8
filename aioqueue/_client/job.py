"""The ``Job[R]`` handle: ``await job`` for the result, and the job's stored state.

Waiting itself lives in ``aioqueue._client.waiter`` (one subscription per client).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, Generic, TypeVar

from aioqueue._client.backend import JobBackend
from aioqueue._protocol.envelope import JobInfo, JobStatus, decode_error
from aioqueue._protocol.keys import QueueKeys
from aioqueue._redis.errors import mapped_errors
from aioqueue.errors import (
    JobAborted,
    JobError,
    JobFailed,
    JobNotFound,
    JobTimedOut,
    MalformedJobError,
)

__all__ = ["Job"]

R = TypeVar("R")


class Job(Generic[R]):
    """A handle on one job. ``await job`` gives its result or raises its error.

    ``Queue.enqueue`` returns one; ``Queue.job(id)`` makes one for a job enqueued
    elsewhere. Awaiting never polls: the result comes by pub/sub, and a job that
    ended before the await began is found at once.

    Attributes:
        id: the job id (16 characters of ``[a-z2-7]``, or the ``job_id`` given).
        queue: the queue the job is in.
        created: False when an enqueue found a job with the same id already
            stored and returned that one instead (deduplication by ``job_id``).
    """

    __slots__ = ("_client", "created", "id", "queue")

    def __init__(self, client: JobBackend, queue: str, job_id: str, created: bool = True) -> None:
        self._client = client
        self.queue = queue
        self.id = job_id
        self.created = created

    def __await__(self) -> Generator[Any, None, R]:
        return self.result().__await__()

    async def result(self, timeout: float | None = None) -> R:
        """The job's return value, once it has one.

        Args:
            timeout: seconds to wait; None waits as long as it takes (a short Redis
                outage is ridden through within it).

        Raises:
            JobFailed: the last attempt raised (``JobTimedOut`` if it timed out); the
                error's type, message and traceback are on the exception.
            JobAborted: the job was aborted, or dropped for a lock (``on_locked="drop"``).
            JobNotFound: no such job, or its result expired (``result_ttl``).
            ResultTimeout: ``timeout`` passed first; the job goes on.
        """
        status, blob = await self._client.waiter.wait(self.queue, self.id, timeout)
        return self._decode(status, blob)

    def _decode(self, status: str, blob: bytes) -> R:
        if status == JobStatus.COMPLETE:
            value: R = self._client.serializer.loads(blob)
            return value
        if status == "missing":
            raise JobNotFound(
                f"job {self.id} not found in queue {self.queue!r}"
                " (never enqueued, or its result expired)",
                job_id=self.id,
            )
        if status == JobStatus.ABORTED:
            # the record says why when there is one: dropped for a held lock, or
            # stopped while running; aborted while queued leaves none
            record = decode_error(blob) if blob else None
            why = record.message if record else ""
            message = f"job {self.id} was aborted" + (f": {why}" if why else "")
            # no record: aborted while queued or scheduled, which writes none
            code = record.code if record and record.code else "aborted"
            raise JobAborted(message, job_id=self.id, reason=why, code=code)
        if status == JobStatus.FAILED:
            err = decode_error(blob)
            cls = JobTimedOut if err.timed_out else JobFailed
            raise cls(
                job_id=self.id,
                exc_type=err.type,
                exc_message=err.message,
                remote_traceback=err.traceback,
                code=err.code,
            )
        raise JobError(f"job {self.id} ended with unexpected status {status!r}", job_id=self.id)

    async def info(self) -> JobInfo:
        """The job's stored state: status, attempts, times, worker, last error."""
        reply = await self._client.command("HGETALL", QueueKeys(self.queue).job(self.id))
        # a flat list on the Queue's own connections, a dict from redis-py's cluster client
        fields: dict[bytes, bytes] = (
            reply if isinstance(reply, dict) else dict(zip(reply[::2], reply[1::2], strict=True))
        )
        if not fields:
            raise JobNotFound(f"job {self.id} not found in queue {self.queue!r}", job_id=self.id)
        try:
            return JobInfo.from_hash(self.queue, self.id, fields, self._client.serializer.loads)
        except MalformedJobError:
            raise
        except Exception as exc:
            raise MalformedJobError(f"job {self.id}: {exc}") from exc

    async def status(self) -> JobStatus:
        """The job's status now (one read).

        Raises:
            JobNotFound: no such job, or its record expired.
        """
        raw = await self._client.command("HGET", QueueKeys(self.queue).job(self.id), "s")
        if raw is None:
            raise JobNotFound(f"job {self.id} not found in queue {self.queue!r}", job_id=self.id)
        try:
            return JobStatus(raw.decode())
        except ValueError:  # UnicodeDecodeError too
            raise MalformedJobError(f"job {self.id} has unknown status {raw[:50]!r}") from None

    async def abort(self) -> bool:
        """Aborts a queued or scheduled job at once, a running one in its worker.

        Returns False when the job had already ended (or does not exist).
        """
        ttl = self._client.result_ttl  # 0: not kept; negative: kept until deleted
        ttl_ms = -1 if ttl < 0 else max(int(ttl * 1000), 0 if ttl == 0 else 1)
        with mapped_errors(self._client.url):
            before = await self._client.scripts.abort(self.queue, self.id, ttl_ms)
        return before in ("queued", "scheduled", "active")

    def __repr__(self) -> str:
        return f"<Job {self.queue}/{self.id}>"
