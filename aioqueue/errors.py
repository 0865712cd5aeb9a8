"""The errors aioqueue raises, all rooted at one base class.

    AioqueueError
    ├── ConfigurationError      bad settings, a task or worker that cannot be used
    │   └── QueueClosed         the ``Queue`` was closed (or not opened) before the call or await
    ├── SerializationError      an argument or result the serializer cannot encode
    │   └── PayloadTooLarge     an encoded job or result over its size limit
    ├── TransientError          the backend could not take the call now; the same call may
    │   │                       succeed later (back off and retry)
    │   ├── RedisUnavailable    Redis did not answer within the timeout
    │   ├── RedisOutOfMemory    Redis refuses new jobs: maxmemory reached (noeviction)
    │   ├── QueueFull           the queue holds ``max_length`` jobs already (backpressure)
    │   └── NotReplicated       a durable enqueue no replica acknowledged in time
    ├── RedisRefused            Redis answered with an error: an ACL (NOPERM), a key of the
    │                           wrong type (WRONGTYPE), a script error; also a redis-py
    │                           ``ResponseError``
    ├── NotAllEnqueued          ``enqueue_many`` over several queues stored some jobs only;
    │                           also an instance of the first failure's class (``QueueFull``...)
    ├── UnknownTaskError        a job names a task the worker does not know
    ├── WorkerLost              recorded for a job whose worker died on ``max_lost`` deliveries
    ├── PoolProcessLost         recorded for a job whose process-pool child died under it
    ├── MalformedJobError       bytes in Redis that are not a job this version can read
    │   └── SignatureError      a job not signed with the worker's signing key
    └── JobError                about one job, carries its ``job_id``
        ├── JobFailed           the job raised; carries the remote type, message, traceback
        │   └── JobTimedOut     the job ran past its timeout
        ├── JobAborted          the job was aborted before it could finish
        ├── JobNotFound         no such job (never enqueued, or its result expired)
        └── ResultTimeout       ``result(timeout=...)`` gave up waiting (also a TimeoutError)

``Retry`` is not an error: a task raises it to ask for another attempt later.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from redis.exceptions import ResponseError

__all__ = [
    "AioqueueError",
    "ConfigurationError",
    "JobAborted",
    "JobError",
    "JobFailed",
    "JobNotFound",
    "JobTimedOut",
    "MalformedJobError",
    "NotAllEnqueued",
    "NotReplicated",
    "PayloadTooLarge",
    "PoolProcessLost",
    "QueueClosed",
    "QueueFull",
    "RedisOutOfMemory",
    "RedisRefused",
    "RedisUnavailable",
    "ResultTimeout",
    "Retry",
    "SerializationError",
    "SignatureError",
    "TransientError",
    "UnknownTaskError",
    "WorkerLost",
]


class AioqueueError(Exception):
    """Base of every error aioqueue raises."""


class ConfigurationError(AioqueueError):
    """Settings, a task or a worker that cannot be used as given."""


class SerializationError(AioqueueError):
    """A value the serializer cannot encode or bytes it cannot decode."""


class PayloadTooLarge(SerializationError):
    """An encoded job or result is larger than the configured limit."""


class TransientError(AioqueueError):
    """The backend could not take the call now: the same call may succeed later."""


class RedisUnavailable(TransientError):
    """Redis could not be reached, or did not answer in time."""


class RedisOutOfMemory(TransientError):
    """Redis is at maxmemory and refuses new jobs; running jobs still finish."""


class RedisRefused(AioqueueError, ResponseError):
    """Redis answered a command with an error reply instead of doing it.

    An ACL that does not allow a command, key or channel (``code`` 'NOPERM'), a
    key holding the wrong type (``WRONGTYPE``), an error raised in a script.
    ``code`` is the reply's first word when it is an upper-case code, else ''.
    It is also a ``redis.exceptions.ResponseError``, so code written against
    redis-py's errors still catches it.

    Attributes:
        code: the reply's error code (``NOPERM``, ``WRONGTYPE``, ...) or ''.
    """

    def __init__(self, message: str, *, code: str = "") -> None:
        super().__init__(message)
        self.code = code


class QueueFull(TransientError):
    """The queue already holds its ``max_length`` jobs."""


class NotAllEnqueued(AioqueueError):
    """``enqueue_many`` over several queues stored the jobs of some queues only.

    One call per queue is sent; each stores all of its batch or none of it.
    ``stored``: the ``aioqueue.Job`` handles of the jobs stored, in call order (typed
    ``Any`` because this module sits below the one defining ``Job``); ``not_stored``:
    the ids of the others, in call order; ``errors``: why, per queue. The error is also
    an instance of the first failure's class, so ``except QueueFull`` catches it
    when a queue was full. A job whose queue did not answer in time
    (``RedisUnavailable``) may have been stored after all: enqueueing it again
    under the same id (``with_options(job_id=...)``) never stores it twice.

    Attributes:
        stored: the ``Job`` handles of the jobs stored, in call order.
        not_stored: the ids of the jobs not stored, in call order.
        errors: why, by queue name.
    """

    stored: list[Any]
    not_stored: list[str]
    errors: dict[str, AioqueueError]

    def __init__(
        self,
        message: str,
        *,
        stored: list[Any],
        not_stored: list[str],
        errors: dict[str, AioqueueError],
    ) -> None:
        # not the failure class's __init__: theirs take other arguments
        Exception.__init__(self, message)
        self.stored = stored
        self.not_stored = not_stored
        self.errors = errors

    @classmethod
    def of(
        cls,
        first: AioqueueError,
        *,
        stored: list[Any],
        not_stored: list[str],
        errors: dict[str, AioqueueError],
    ) -> NotAllEnqueued:
        """The error for these outcomes, an instance of ``first``'s class too."""
        kind = _combined(type(first))
        parts = "; ".join(f"{q!r}: {type(e).__name__}: {e}" for q, e in errors.items())
        message = (
            f"enqueue_many stored {len(stored)} of {len(stored) + len(not_stored)} jobs ({parts})"
        )
        out = kind(message, stored=stored, not_stored=not_stored, errors=errors)
        for name, value in vars(first).items():  # e.g. NotReplicated.job_ids
            out.__dict__.setdefault(name, value)
        return out


_COMBINED: dict[type[AioqueueError], type[NotAllEnqueued]] = {}


def _combined(kind: type[AioqueueError]) -> type[NotAllEnqueued]:
    if issubclass(kind, NotAllEnqueued):
        return kind
    if kind not in _COMBINED:
        _COMBINED[kind] = type(f"NotAllEnqueued_{kind.__name__}", (NotAllEnqueued, kind), {})
    return _COMBINED[kind]


class NotReplicated(TransientError):
    """A durable enqueue was stored on the primary but no replica acknowledged it in time.

    The jobs exist and will run, unless the primary fails before they reach a
    replica. Enqueueing them again under the same job ids is safe: an id that
    is already stored is not stored twice.

    Attributes:
        job_ids: the ids of the jobs stored but not acknowledged by a replica.
    """

    def __init__(self, message: str, *, job_ids: list[str]) -> None:
        super().__init__(message)
        self.job_ids = job_ids


class QueueClosed(ConfigurationError):
    """The ``Queue`` was closed (or never opened with ``async with``): a pending
    ``await job`` ends with this at the close instead of waiting for ever.
    ``job_id`` names the job awaited, when there was one. A ``ConfigurationError``:
    awaiting on a Queue outside its ``async with`` is a usage mistake.

    Attributes:
        job_id: the job awaited, or None.
    """

    def __init__(self, message: str, *, job_id: str | None = None) -> None:
        super().__init__(message)
        self.job_id = job_id


class UnknownTaskError(AioqueueError):
    """A job names a task that the worker does not have."""


class WorkerLost(AioqueueError):
    """The job's worker died (its lease expired) on too many of its deliveries.

    Never raised to a caller: it is the error a dead-lettered job records.
    """

    def __init__(self, times: int) -> None:
        super().__init__(f"the worker running this job was lost {times} times (crash or kill)")


class PoolProcessLost(AioqueueError):
    """The pool process running the job died before it answered (killed, crashed,
    out of memory); a fresh process replaces it. Recorded as the attempt's error."""


class MalformedJobError(AioqueueError):
    """Bytes found in Redis that are not a job this version can read."""


class SignatureError(MalformedJobError):
    """A job whose HMAC signature is missing or does not match the signing key."""


class JobError(AioqueueError):
    """An error about one job.

    Attributes:
        job_id: the job's id.
    """

    def __init__(self, message: str, *, job_id: str) -> None:
        super().__init__(message)
        self.job_id = job_id


class JobFailed(JobError):
    """The job raised an exception in its worker.

    ``exc_type`` is the qualified name of the remote exception class,
    ``exc_message`` its message and ``remote_traceback`` the formatted traceback.

    Attributes:
        exc_type: ``module.qualname`` of the exception the task raised
            (``builtins.ValueError``).
        exc_message: its message.
        remote_traceback: the worker's formatted traceback, cut in the middle past
            the worker's ``max_error_size``.
        code: when aioqueue decided the failure, a code that never changes (unlike
            ``exc_type``, which names a module path): ``worker_lost``,
            ``pool_process_lost``, ``unknown_task``, ``bad_options``, ``bad_arguments``,
            ``result_too_large``, ``result_not_serializable``, ``timeout``, ``internal``;
            '' when the task's own code raised.
    """

    def __init__(
        self,
        *,
        job_id: str,
        exc_type: str,
        exc_message: str,
        remote_traceback: str,
        code: str = "",
    ) -> None:
        super().__init__(f"job {job_id} failed: {exc_type}: {exc_message}", job_id=job_id)
        self.exc_type = exc_type
        self.exc_message = exc_message
        self.remote_traceback = remote_traceback
        self.code = code


class JobTimedOut(JobFailed):
    """The job ran past its timeout on its last attempt."""


class JobAborted(JobError):
    """The job was aborted: by ``job.abort()``, or dropped because its unique lock
    was held (``reason`` says which, '' when the record does not).

    Attributes:
        reason: why, as recorded ('' when aborted while queued).
        code: ``lock_held`` when dropped for a held lock, else ``aborted``.
    """

    def __init__(self, message: str, *, job_id: str, reason: str = "", code: str = "") -> None:
        super().__init__(message, job_id=job_id)
        self.reason = reason
        self.code = code


class JobNotFound(JobError):
    """No job with this id is stored: never enqueued, or its result expired."""


class ResultTimeout(JobError, TimeoutError):
    """Waiting for a job's result took longer than the caller allowed."""


class Retry(Exception):
    """Raise from a task to run it again after ``defer`` (seconds or a timedelta; default:
    the backoff). The attempt counts towards the task's ``max_attempts``.

    A ``defer`` that is not a finite number of seconds, 0 or more, fails the job
    at once with a ``ConfigurationError`` (asking again would ask the same).

    Attributes:
        defer: the seconds asked for, or None for the task's backoff.
    """

    def __init__(self, defer: float | timedelta | None = None) -> None:
        if isinstance(defer, timedelta):
            defer = defer.total_seconds()
        super().__init__(f"retry requested (defer={defer})")
        self.defer = defer
