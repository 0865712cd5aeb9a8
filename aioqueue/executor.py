"""Runs one delivery of a job and decides its outcome.

The outcome (complete, retry, failed, aborted, release) is not written here: the
worker batches outcomes into one ``finish`` call per queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import anyio
import structlog

from aioqueue import signing
from aioqueue.context import JobContext, _current
from aioqueue.errors import (
    JobAborted,
    MalformedJobError,
    PayloadTooLarge,
    Retry,
    SerializationError,
    UnknownTaskError,
)
from aioqueue.job import ErrorInfo, decode_envelope, encode_error
from aioqueue.scripts import Claimed
from aioqueue.serializers import Serializer
from aioqueue.task import Task

log = structlog.get_logger("aioqueue.worker")


@dataclass(slots=True, eq=False)
class Running:
    """A delivery held by this worker; ``stop_reason`` says why its timer was cut short."""

    job: Claimed
    timer: asyncio.Timeout | None = None  # set while the job's code runs
    stop_reason: str | None = None  # 'abort' | 'shutdown' | 'lost'
    started: float = field(default_factory=time.monotonic)

    def stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
        if self.timer is not None:
            with contextlib.suppress(RuntimeError):  # already expiring or over
                self.timer.reschedule(-1.0)  # in the past: cancels on the next loop pass


@dataclass(frozen=True, slots=True)
class Outcome:
    """What ``finish`` must record for one delivery. kind 'quarantine' is set aside instead."""

    kind: str  # complete | failed | retry | release | aborted | quarantine
    blob: bytes = b""
    ttl_ms: int = -1
    delay_ms: int = 0

    def wire(self, job: Claimed) -> tuple[str, str, str, bytes, int, int]:
        return (job.id, job.token, self.kind, self.blob, self.ttl_ms, self.delay_ms)


RELEASE = Outcome("release")


def error_info(exc: BaseException, *, timed_out: bool = False) -> ErrorInfo:
    cls = type(exc)
    return ErrorInfo(
        type=f"{cls.__module__}.{cls.__qualname__}",
        message=str(exc),
        traceback="".join(traceback.format_exception(exc)),
        timed_out=timed_out,
    )


@dataclass(slots=True)
class Defaults:
    """Worker-wide defaults for options neither the job nor its task set."""

    timeout: float = 300.0
    max_attempts: int = 3
    result_ttl: float = 3600.0


class Executor:
    def __init__(
        self,
        tasks: dict[str, Task[Any, Any]],
        serializer: Serializer,
        defaults: Defaults,
        worker_id: str,
        state: dict[str, Any],
        thread_limiter: anyio.CapacityLimiter,
        signing_key: signing.SigningKeys | None = None,
        max_result_size: int | None = None,
    ) -> None:
        self.tasks = tasks
        self.serializer = serializer
        self.defaults = defaults
        self.worker_id = worker_id
        self.state = state
        self.thread_limiter = thread_limiter
        self.signer = signing.Signer(signing_key) if signing_key is not None else None
        self.max_result_size = max_result_size

    async def run(self, running: Running) -> Outcome | None:
        """The outcome to record, or None when the delivery is no longer ours."""
        job = running.job
        try:
            raw = job.payload
            if self.signer is not None:
                raw = self.signer.verify(raw, queue=job.queue, job_id=job.id, lock=job.lock)
            envelope = decode_envelope(raw)
        except MalformedJobError as exc:
            log.error("job.malformed", job_id=job.id, queue=job.queue, error=str(exc))
            return Outcome("quarantine", str(exc).encode())
        task = self.tasks.get(envelope.task)
        ttl_s = envelope.result_ttl
        if task is not None and ttl_s is None:
            ttl_s = task.defaults.result_ttl
        ttl_ms = self._ttl_ms(ttl_s)
        if task is None or task.fn is None:
            unknown = UnknownTaskError(f"no task named {envelope.task!r} in this worker")
            return self._dead(job, envelope.task, unknown, ttl_ms)
        max_attempts = (
            envelope.max_attempts or task.defaults.max_attempts or self.defaults.max_attempts
        )
        # on the delivery after the max_lost-th loss (a loss is known only once it happened)
        if job.lost >= max(task.max_lost, 1):
            return self._dead(job, task.name, WorkerLost(job.lost), ttl_ms)
        try:
            args, kwargs = self.serializer.loads(envelope.data)
        except (SerializationError, TypeError, ValueError) as bad_args:
            return self._dead(job, task.name, bad_args, ttl_ms)
        timeout = envelope.timeout or task.defaults.timeout or self.defaults.timeout
        ctx = JobContext(
            job.id, job.queue, task.name, job.attempt, max_attempts, self.worker_id, self.state
        )
        reset = _current.set(ctx)
        start = time.perf_counter()
        timed_out = False
        try:
            # One asyncio timer per job: its deadline is the timeout, and abort,
            # shutdown or a lost lease move it to now (Running.stop). asyncio's own
            # Timeout, not an anyio cancel scope: a scope cost a fifth of a no-op
            # job's CPU, and redis-py ties the worker to asyncio anyway.
            timer = asyncio.timeout(timeout)
            try:
                async with timer:
                    running.timer = timer
                    if running.stop_reason is not None:
                        running.stop(running.stop_reason)  # stopped before its timer existed
                    if task.is_async:
                        result = await task.fn(*args, **kwargs)
                    else:
                        call = functools.partial(task.fn, *args, **kwargs)
                        result = await anyio.to_thread.run_sync(
                            call, abandon_on_cancel=True, limiter=self.thread_limiter
                        )
            except TimeoutError:
                if not timer.expired():
                    raise  # the task's own TimeoutError: it failed like any error
            finally:
                running.timer = None
            if timer.expired():  # also when the task swallowed the cancellation
                if running.stop_reason is not None:
                    return self._stopped(running, task.name)
                timed_out = True
                raise TimeoutError(f"job timed out after {timeout}s")
            blob = self.serializer.dumps(result)
            if self.max_result_size is not None and len(blob) > self.max_result_size:
                raise PayloadTooLarge(
                    f"result is {len(blob)} bytes; the limit is {self.max_result_size}"
                )
        except Retry as exc:
            return self._retry_or_dead(job, task, exc, max_attempts, ttl_ms, exc.defer, start)
        except SerializationError as exc:
            return self._dead(job, task.name, exc, ttl_ms)  # running it again would not help
        except Exception as exc:
            return self._retry_or_dead(job, task, exc, max_attempts, ttl_ms, None, start, timed_out)
        except BaseException as exc:
            if isinstance(exc, anyio.get_cancelled_exc_class()):
                raise
            # SystemExit, KeyboardInterrupt raised by task code: the job failed, the worker lives
            return self._retry_or_dead(job, task, exc, max_attempts, ttl_ms, None, start)
        finally:
            _current.reset(reset)
        log.info(
            "job.completed",
            job_id=job.id,
            task=task.name,
            queue=job.queue,
            attempt=job.attempt,
            duration_ms=round((time.perf_counter() - start) * 1000, 3),
        )
        return Outcome("complete", blob, ttl_ms)

    def _ttl_ms(self, ttl_s: float | None) -> int:
        if ttl_s is None:
            ttl_s = self.defaults.result_ttl
        if ttl_s < 0:
            return -1
        return max(int(ttl_s * 1000), 0 if ttl_s == 0 else 1)

    def _stopped(self, running: Running, task: str) -> Outcome | None:
        job = running.job
        log.info(
            "job.stopped", job_id=job.id, task=task, queue=job.queue, reason=running.stop_reason
        )
        if running.stop_reason == "abort":
            info = error_info(JobAborted("aborted while running", job_id=job.id))
            return Outcome("aborted", encode_error(info), self._ttl_ms(None))
        if running.stop_reason == "shutdown":
            return RELEASE
        return None  # lost: another worker owns this delivery now

    def _dead(
        self, job: Claimed, task: str, exc: BaseException, ttl_ms: int, *, timed_out: bool = False
    ) -> Outcome:
        log.error(
            "job.failed",
            job_id=job.id,
            task=task,
            queue=job.queue,
            attempt=job.attempt,
            error=f"{type(exc).__name__}: {exc}",
        )
        return Outcome("failed", encode_error(error_info(exc, timed_out=timed_out)), ttl_ms)

    def _retry_or_dead(
        self,
        job: Claimed,
        task: Task[Any, Any],
        exc: BaseException,
        max_attempts: int,
        ttl_ms: int,
        defer: float | None,
        start: float,
        timed_out: bool = False,
    ) -> Outcome:
        used = job.attempt - job.lost
        if used >= max_attempts:
            return self._dead(job, task.name, exc, ttl_ms, timed_out=timed_out)
        if defer is None:
            ceiling = min(task.backoff_max, task.backoff * 2 ** (used - 1))
            defer = ceiling / 2 + random.uniform(0, ceiling / 2)
        log.warning(
            "job.retrying",
            job_id=job.id,
            task=task.name,
            queue=job.queue,
            attempt=job.attempt,
            retry_in=round(defer, 3),
            duration_ms=round((time.perf_counter() - start) * 1000, 3),
            error=f"{type(exc).__name__}: {exc}",
        )
        info = error_info(exc, timed_out=timed_out)
        return Outcome("retry", encode_error(info), ttl_ms, int(defer * 1000))


class WorkerLost(Exception):
    """The job's worker died (lease expired) on too many of its deliveries."""

    def __init__(self, times: int) -> None:
        super().__init__(f"the worker running this job was lost {times} times (crash or kill)")
