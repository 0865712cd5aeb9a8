"""The errors aioqueue raises, all rooted at one base class.

    AioqueueError
    ├── ConfigurationError      bad settings, a task or worker that cannot be used
    ├── SerializationError      an argument or result the serializer cannot encode
    │   └── PayloadTooLarge     an encoded job or result over its size limit
    ├── RedisUnavailable        Redis did not answer within the timeout
    ├── RedisOutOfMemory        Redis refuses new jobs: maxmemory reached (noeviction)
    ├── QueueFull               the queue holds ``max_length`` jobs already (backpressure)
    ├── NotReplicated           a durable enqueue no replica acknowledged in time
    ├── UnknownTaskError        a job names a task the worker does not know
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

__all__ = [
    "AioqueueError",
    "ConfigurationError",
    "JobAborted",
    "JobError",
    "JobFailed",
    "JobNotFound",
    "JobTimedOut",
    "MalformedJobError",
    "NotReplicated",
    "PayloadTooLarge",
    "QueueFull",
    "RedisOutOfMemory",
    "RedisUnavailable",
    "ResultTimeout",
    "Retry",
    "SerializationError",
    "SignatureError",
    "UnknownTaskError",
]


class AioqueueError(Exception):
    """Base of every error aioqueue raises."""


class ConfigurationError(AioqueueError):
    """Settings, a task or a worker that cannot be used as given."""


class SerializationError(AioqueueError):
    """A value the serializer cannot encode or bytes it cannot decode."""


class PayloadTooLarge(SerializationError):
    """An encoded job or result is larger than the configured limit."""


class RedisUnavailable(AioqueueError):
    """Redis could not be reached, or did not answer in time."""


class RedisOutOfMemory(AioqueueError):
    """Redis is at maxmemory and refuses new jobs; running jobs still finish."""


class QueueFull(AioqueueError):
    """The queue already holds its ``max_length`` jobs."""


class NotReplicated(AioqueueError):
    """A durable enqueue was stored on the primary but no replica acknowledged it in time.

    The jobs exist and will run, unless the primary fails before they reach a
    replica. Enqueueing them again under the same job ids is safe: an id that
    is already stored is not stored twice.
    """

    def __init__(self, message: str, *, job_ids: list[str]) -> None:
        super().__init__(message)
        self.job_ids = job_ids


class UnknownTaskError(AioqueueError):
    """A job names a task that the worker does not have."""


class MalformedJobError(AioqueueError):
    """Bytes found in Redis that are not a job this version can read."""


class SignatureError(MalformedJobError):
    """A job whose HMAC signature is missing or does not match the signing key."""


class JobError(AioqueueError):
    """An error about one job."""

    def __init__(self, message: str, *, job_id: str) -> None:
        super().__init__(message)
        self.job_id = job_id


class JobFailed(JobError):
    """The job raised an exception in its worker.

    ``exc_type`` is the qualified name of the remote exception class,
    ``exc_message`` its message and ``remote_traceback`` the formatted traceback.
    """

    def __init__(
        self, *, job_id: str, exc_type: str, exc_message: str, remote_traceback: str
    ) -> None:
        super().__init__(f"job {job_id} failed: {exc_type}: {exc_message}", job_id=job_id)
        self.exc_type = exc_type
        self.exc_message = exc_message
        self.remote_traceback = remote_traceback


class JobTimedOut(JobFailed):
    """The job ran past its timeout on its last attempt."""


class JobAborted(JobError):
    """The job was aborted."""


class JobNotFound(JobError):
    """No job with this id is stored: never enqueued, or its result expired."""


class ResultTimeout(JobError, TimeoutError):
    """Waiting for a job's result took longer than the caller allowed."""


class Retry(Exception):
    """Raise from a task to run it again after ``defer`` seconds (default: the backoff).

    The attempt counts towards the task's ``max_attempts``.
    """

    def __init__(self, defer: float | None = None) -> None:
        super().__init__(f"retry requested (defer={defer})")
        self.defer = defer
