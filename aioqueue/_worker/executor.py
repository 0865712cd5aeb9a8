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
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import anyio
import structlog

from aioqueue._hooks import NO_HOOKS, Hooks, start
from aioqueue._protocol import codes, signing
from aioqueue._protocol.durations import count, seconds
from aioqueue._protocol.envelope import Envelope, ErrorInfo, decode_envelope
from aioqueue._protocol.functions import Claimed
from aioqueue._worker.deadlines import Deadlines, JobTimer
from aioqueue._worker.failures import (
    DEFAULT_MAX_ERROR_SIZE,
    ErrorRecords,
    describe,
    log_text,
    valid_text,
)
from aioqueue._worker.procpool import ProcessPool
from aioqueue._worker.threads import ThreadPool
from aioqueue.context import JobContext, _current
from aioqueue.errors import (
    ConfigurationError,
    JobAborted,
    MalformedJobError,
    PayloadTooLarge,
    Retry,
    SerializationError,
    UnknownTaskError,
    WorkerLost,
)
from aioqueue.middleware import Attempt, AttemptResult
from aioqueue.serializers import Serializer
from aioqueue.task import Task

log = structlog.get_logger("aioqueue.worker")


@dataclass(slots=True, eq=False)
class Running:
    """A delivery held by this worker; ``stop_reason`` says why its timer was cut short."""

    job: Claimed
    timer: JobTimer | None = None  # set while the job's code runs
    stop_reason: str | None = None  # 'abort' | 'shutdown' | 'lost'
    started: float = field(default_factory=time.monotonic)
    attempt: Attempt | None = None  # built when middleware hooks attempts
    result: AttemptResult | None = None  # how the attempt ended, for on_settled

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
    # what the middleware are told (aioqueue.middleware.Outcome), and why
    label: str = "released"
    error: BaseException | None = field(default=None, compare=False)
    info: ErrorInfo | None = None

    def wire(self, job: Claimed) -> tuple[str, str, str, bytes, int, int]:
        return (job.id, job.token, self.kind, self.blob, self.ttl_ms, self.delay_ms)


RELEASE = Outcome("release")
_NO_HEADERS: Mapping[str, str] = MappingProxyType({})  # shared: read-only


@dataclass(frozen=True, slots=True)
class _Encoded:
    """A result that arrives serialized already (from a pool process)."""

    blob: bytes


@dataclass(slots=True)
class Defaults:
    """Worker-wide defaults for options neither the job nor its task set."""

    timeout: float = 300.0
    max_attempts: int = 3
    result_ttl: float = 3600.0


Plan = tuple[int, float, int]
PLANS_KEPT = 1024  # option combinations remembered, checked


def _ttl_ms(ttl_s: float) -> int:
    if ttl_s < 0:
        return -1
    return max(int(ttl_s * 1000), 0 if ttl_s == 0 else 1)


class Executor:
    def __init__(
        self,
        tasks: dict[str, Task[Any, Any]],
        serializer: Serializer,
        defaults: Defaults,
        worker_id: str,
        state: dict[str, Any],
        threads: ThreadPool,
        signing_key: signing.SigningKeys | None = None,
        max_result_size: int | None = None,
        max_error_size: int | None = DEFAULT_MAX_ERROR_SIZE,
        *,
        pool: ProcessPool | None = None,
        hooks: Hooks = NO_HOOKS,
    ) -> None:
        self.tasks = tasks
        self.serializer = serializer
        self.defaults = defaults
        self.worker_id = worker_id
        self.state = state
        self.threads = threads
        self.signer = signing.Signer(signing_key) if signing_key is not None else None
        self.max_result_size = max_result_size
        self.errors = ErrorRecords(max_error_size)
        self._plans: dict[tuple[str, float | None, float | None, int | None], Plan] = {}
        self.pool = pool  # runs the executor="process" tasks
        self.hooks = hooks
        self._hooked = hooks.attempts
        self._before, self._after = hooks.before_attempt, hooks.after_attempt
        self._deadlines: Deadlines | None = None  # made on the loop of the first job

    async def run(self, running: Running) -> Outcome | None:
        """The outcome to record, or None when the delivery is no longer ours.

        Never raises (cancellation aside): whatever goes wrong while running or
        recording one job is that job's failure, never the worker's.
        """
        try:
            outcome = await self._run(running)
        except Exception as exc:
            outcome = self._broken(running.job, exc)
        attempt = running.attempt
        if attempt is not None:
            running.result = result = self._result(attempt, outcome)
            rest = start(self._after, attempt, result)
            if rest is not None:
                await rest
        return outcome

    @staticmethod
    def _result(attempt: Attempt, outcome: Outcome | None) -> AttemptResult:
        if outcome is None:
            return AttemptResult("lost", duration=time.perf_counter() - attempt.started)
        retry_in = outcome.delay_ms / 1000 if outcome.kind == "retry" else None
        return AttemptResult(
            outcome.label,  # type: ignore[arg-type]  # the executor sets only Outcome's names
            outcome.error,
            outcome.info,
            time.perf_counter() - attempt.started,
            retry_in,
        )

    def _broken(self, job: Claimed, exc: Exception) -> Outcome:
        # a case no check foresaw: the job fails, saying what happened, and the worker goes on
        info = self.errors.info(exc, code=codes.INTERNAL)
        with contextlib.suppress(Exception):
            log.error("job.outcome_error", job_id=job.id, queue=job.queue, error=log_text(info))
        return Outcome("failed", self.errors.encoded(info), label="failed", error=exc, info=info)

    async def _run(self, running: Running) -> Outcome | None:
        job = running.job
        try:
            raw = job.payload
            if self.signer is not None:
                raw = self.signer.verify(raw, queue=job.queue, job_id=job.id, lock=job.lock)
            envelope = decode_envelope(raw)
        except MalformedJobError as exc:
            reason = valid_text(describe(exc))
            log.error("job.malformed", job_id=job.id, queue=job.queue, error=reason)
            return Outcome("quarantine", reason.encode())
        if self._hooked:
            running.attempt = attempt = Attempt(
                job.id,
                job.queue,
                envelope.task,
                job.attempt,
                job.lost,
                self.worker_id,
                envelope.headers or _NO_HEADERS,
                job.wait,
                time.perf_counter(),
            )
            rest = start(self._before, attempt)
            if rest is not None:
                await rest
        task = self.tasks.get(envelope.task)
        if task is None or task.fn is None:
            unknown = UnknownTaskError(f"no task named {envelope.task!r} in this worker")
            return self._dead(job, envelope.task, unknown, -1)
        # options come from Redis, written by any producer: checked like an enqueue's
        try:
            ttl_ms, timeout, max_attempts = self._plan(envelope, task)
        except ConfigurationError as exc:
            return self._dead(job, task.name, exc, -1, code=codes.BAD_OPTIONS)
        # on the delivery after the max_lost-th loss (a loss is known only once it happened)
        if job.lost >= max(task.max_lost, 1):
            return self._dead(job, task.name, WorkerLost(job.lost), ttl_ms)
        try:
            args, kwargs = self.serializer.loads(envelope.data)
        except Exception as bad:  # arguments that do not decode
            return self._dead(job, task.name, bad, ttl_ms, code=codes.BAD_ARGUMENTS)
        ctx = JobContext(
            job.id, job.queue, task.name, job.attempt, max_attempts, self.worker_id, self.state
        )
        reset = _current.set(ctx)
        timed_out = False
        try:
            # One timer per job: its deadline is the timeout, and abort, shutdown or a
            # lost lease move it to now (Running.stop). Not an anyio cancel scope (a
            # scope cost a fifth of a no-op job's CPU, and redis-py ties the worker to
            # asyncio anyway), nor asyncio.timeout (a loop timer each: deadlines.py)
            deadlines = self._deadlines
            if deadlines is None:
                deadlines = self._deadlines = Deadlines(asyncio.get_running_loop())
            timer = deadlines.timer(timeout)
            try:
                async with timer:
                    running.timer = timer
                    if running.stop_reason is not None:
                        running.stop(running.stop_reason)  # stopped before its timer existed
                    if task.is_async:
                        result = await task.fn(*args, **kwargs)
                    elif task.executor == "process" and self.pool is not None:
                        # serialized by the pool process: its bytes are the stored result
                        result = _Encoded(await self.pool.run(task, envelope.data))
                    else:
                        result = await self.threads.run(functools.partial(task.fn, *args, **kwargs))
            except TimeoutError:
                if not timer.expired():
                    raise  # the task's own TimeoutError: it failed like any error
            finally:
                running.timer = None
            if timer.expired():  # also when the task swallowed the cancellation
                if running.stop_reason is not None:
                    return self._stopped(running, task.name)
                timed_out = True
                raise TimeoutError(self._timed_out(task, timeout))
            encoded = isinstance(result, _Encoded)
            blob = result.blob if encoded else self.serializer.dumps(result)
            if self.max_result_size is not None and len(blob) > self.max_result_size:
                raise PayloadTooLarge(
                    f"result is {len(blob)} bytes; the limit is {self.max_result_size}"
                )
        except Retry as exc:
            try:
                defer = None if exc.defer is None else seconds(exc.defer, "Retry(defer=)")
            except ConfigurationError as bad:
                bad.__cause__ = exc  # its traceback shows where the task raised Retry
                return self._dead(
                    job, task.name, bad, ttl_ms, ran=True, code=codes.BAD_OPTIONS
                )  # asking again asks the same
            return self._retry_or_dead(job, task, exc, max_attempts, ttl_ms, defer)
        except SerializationError as exc:
            return self._dead(job, task.name, exc, ttl_ms, ran=True)  # running again would not help
        except Exception as exc:
            return self._retry_or_dead(job, task, exc, max_attempts, ttl_ms, None, timed_out)
        except BaseException as exc:
            if isinstance(exc, anyio.get_cancelled_exc_class()):
                raise
            # SystemExit, KeyboardInterrupt raised by task code: the job failed, the worker lives
            return self._retry_or_dead(job, task, exc, max_attempts, ttl_ms, None)
        finally:
            _current.reset(reset)
        return Outcome("complete", blob, ttl_ms, label="complete")

    def _plan(self, envelope: Envelope, task: Task[Any, Any]) -> Plan:
        """(result ttl ms, timeout, max_attempts) of a job: its own options, else its
        task's, else the worker's. Checked once per combination (NaN never hits the
        cache, so it is checked, and refused, every time)."""
        key = (task.name, envelope.result_ttl, envelope.timeout, envelope.max_attempts)
        plan = self._plans.get(key)
        if plan is None:
            ttl = envelope.result_ttl
            if ttl is None:
                ttl = task.defaults.result_ttl
            if ttl is None:
                ttl = self.defaults.result_ttl
            timeout = envelope.timeout or task.defaults.timeout or self.defaults.timeout
            attempts = (
                envelope.max_attempts or task.defaults.max_attempts or self.defaults.max_attempts
            )
            plan = (
                _ttl_ms(seconds(ttl, "result_ttl", negative=True, timedelta_ok=False)),
                seconds(timeout, "timeout", zero=False, timedelta_ok=False),
                count(attempts, "max_attempts", least=1),
            )
            if len(self._plans) >= PLANS_KEPT:
                self._plans.clear()
            self._plans[key] = plan
        return plan

    def _timed_out(self, task: Task[Any, Any], timeout: float) -> str:
        message = f"job timed out after {timeout}s"
        if not task.is_async and self.threads.abandoned:
            message += (
                f"; {self.threads.abandoned} of the {self.threads.size} sync_threads still run"
                " functions of jobs that gave up on them"
            )
        return message

    def _stopped(self, running: Running, task: str) -> Outcome | None:
        job = running.job
        if running.stop_reason == "abort":
            blob = self.errors.encode(JobAborted("aborted while running", job_id=job.id))
            return Outcome("aborted", blob, _ttl_ms(self.defaults.result_ttl), label="aborted")
        if running.stop_reason == "shutdown":
            return RELEASE
        return None  # lost: another worker owns this delivery now

    def _dead(
        self,
        job: Claimed,
        task: str,
        exc: BaseException,
        ttl_ms: int,
        *,
        timed_out: bool = False,
        ran: bool = False,
        code: str | None = None,
    ) -> Outcome:
        info = self.errors.info(exc, timed_out=timed_out, code=code)
        label = "timeout" if timed_out else ("failed" if ran else "dead")
        return Outcome(
            "failed", self.errors.encoded(info), ttl_ms, label=label, error=exc, info=info
        )

    def _retry_or_dead(
        self,
        job: Claimed,
        task: Task[Any, Any],
        exc: BaseException,
        max_attempts: int,
        ttl_ms: int,
        defer: float | None,
        timed_out: bool = False,
    ) -> Outcome:
        used = job.attempt - job.lost
        if used >= max_attempts:
            return self._dead(job, task.name, exc, ttl_ms, timed_out=timed_out, ran=True)
        if defer is None:
            # the exponent is bounded: 2 ** 1024 is too large for a float
            ceiling = min(task.backoff_max, task.backoff * 2.0 ** min(max(used - 1, 0), 64))
            defer = ceiling / 2 + random.uniform(0, ceiling / 2)
        info = self.errors.info(exc, timed_out=timed_out)
        label = "timeout" if timed_out else "retried"
        blob = self.errors.encoded(info)
        return Outcome("retry", blob, ttl_ms, int(defer * 1000), label, exc, info)
