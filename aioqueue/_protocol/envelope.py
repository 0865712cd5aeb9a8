"""What a job is on the wire: the envelope a producer writes, the error record a
worker writes, the status enum and the read-only info a client sees."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec

from aioqueue._protocol import signing
from aioqueue.errors import MalformedJobError

__all__ = ["ErrorInfo", "JobInfo", "JobStatus"]

ENVELOPE_VERSION = 1


class JobStatus(enum.StrEnum):
    """Where a job is in its life (see [How aioqueue works](../../how-it-works.md)).

    A string enum: ``JobStatus.QUEUED == "queued"``.

    Attributes:
        QUEUED: in the ready list, waiting for a worker (also while parked behind a
            held lock).
        SCHEDULED: due later: a delay, ``at=``, or a retry's backoff.
        ACTIVE: leased to a worker, running.
        COMPLETE: returned; the result is kept for ``result_ttl``.
        FAILED: the last attempt failed: dead-lettered with its error.
        ABORTED: aborted, or dropped for a held lock.
    """

    QUEUED = "queued"
    SCHEDULED = "scheduled"
    ACTIVE = "active"
    COMPLETE = "complete"
    FAILED = "failed"
    ABORTED = "aborted"

    @property
    def is_final(self) -> bool:
        """True for COMPLETE, FAILED and ABORTED: the job will not change again."""
        return self in (JobStatus.COMPLETE, JobStatus.FAILED, JobStatus.ABORTED)


class Envelope(msgspec.Struct, array_like=True, omit_defaults=True):
    """The payload a producer writes (field ``d`` of the job hash).

    ``data`` is ``[args, kwargs]`` encoded by the queue's serializer; then the
    per-job overrides of the task's options (None: the worker's task default), and
    the headers of the producer's middleware.
    """

    v: int
    task: str
    data: bytes
    timeout: float | None = None
    max_attempts: int | None = None
    result_ttl: float | None = None
    # strings the producer's middleware pass to the worker's (a trace context, ...)
    headers: dict[str, str] | None = None


class ErrorInfo(msgspec.Struct, array_like=True, omit_defaults=True):
    """Why a job failed, as stored with it and shown to whoever awaits it.

    Attributes:
        type: ``module.qualname`` of the exception.
        message: its message.
        traceback: the formatted traceback ('' when none was recorded).
        timed_out: the attempt ran past its timeout.
        code: a stable code when aioqueue decided the failure (``worker_lost``,
            ``unknown_task``, ...: see ``JobFailed.code``); '' when the task raised.
    """

    type: str
    message: str
    traceback: str = ""
    timed_out: bool = False
    code: str = ""


_envelope_encoder = msgspec.msgpack.Encoder()
_envelope_decoder = msgspec.msgpack.Decoder(Envelope)
_error_decoder = msgspec.msgpack.Decoder(ErrorInfo)


def encode_envelope(envelope: Envelope) -> bytes:
    return _envelope_encoder.encode(envelope)


def decode_envelope(raw: bytes | None) -> Envelope:
    if raw is None:
        raise MalformedJobError("job has no payload")
    try:
        envelope = _envelope_decoder.decode(signing.strip(raw))
    except (msgspec.DecodeError, ValueError, RecursionError) as exc:
        raise MalformedJobError(f"unreadable payload: {exc}") from exc
    if envelope.v != ENVELOPE_VERSION:
        raise MalformedJobError(f"payload version {envelope.v} is not {ENVELOPE_VERSION}")
    return envelope


def encode_error(error: ErrorInfo) -> bytes:
    return _envelope_encoder.encode(error)


def decode_error(raw: bytes | None) -> ErrorInfo:
    if not raw:
        return ErrorInfo(type="unknown", message="no error recorded")
    try:
        return _error_decoder.decode(raw)
    except (msgspec.DecodeError, ValueError, RecursionError):
        return ErrorInfo(type="unknown", message=f"unreadable error record: {raw[:200]!r}")


def _ms_to_dt(raw: bytes | None) -> datetime | None:
    if raw is None:
        return None
    return datetime.fromtimestamp(int(raw) / 1000, tz=UTC)


@dataclass(frozen=True, slots=True)
class JobInfo:
    """A job's state as stored in Redis at the time it was read (``await job.info()``).

    Times are the Redis server's, as UTC datetimes; None where the job has not
    reached that point (or the record no longer says).

    Attributes:
        id: the job id.
        queue: its queue.
        status: its ``JobStatus``.
        task: the task's name; None when the payload cannot be read.
        attempts: attempts started so far.
        enqueued_at: when it was enqueued.
        started_at: when its last attempt started.
        ended_at: when it ended.
        due_at: when it is due, for a SCHEDULED job.
        worker: the id of the worker running (or that last ran) it.
        error: the last error, if any.
        args: its positional arguments, decoded; None when they cannot be.
        kwargs: its keyword arguments, decoded; None when they cannot be.
    """

    id: str
    queue: str
    status: JobStatus
    task: str | None
    attempts: int
    enqueued_at: datetime | None
    started_at: datetime | None
    ended_at: datetime | None
    due_at: datetime | None
    worker: str | None
    error: ErrorInfo | None
    args: tuple[Any, ...] | None = None
    kwargs: dict[str, Any] | None = None

    @classmethod
    def from_hash(cls, queue: str, job_id: str, fields: dict[bytes, bytes], loads: Any) -> JobInfo:
        """Reads the job hash's fields (internal: ``Job.info`` calls it)."""
        task: str | None = None
        args: tuple[Any, ...] | None = None
        kwargs: dict[str, Any] | None = None
        try:
            envelope = decode_envelope(fields.get(b"d"))
            task = envelope.task
            decoded_args, kwargs = loads(envelope.data)
            args = tuple(decoded_args)
        except Exception:  # info must work even for a job it cannot read
            pass
        status_raw = fields.get(b"s", b"queued").decode()
        try:
            status = JobStatus(status_raw)
        except ValueError:
            raise MalformedJobError(f"job {job_id} has unknown status {status_raw!r}") from None
        err = fields.get(b"e")
        worker = fields.get(b"w")
        return cls(
            id=job_id,
            queue=queue,
            status=status,
            task=task,
            attempts=int(fields.get(b"a", b"0")),
            enqueued_at=_ms_to_dt(fields.get(b"q")),
            started_at=_ms_to_dt(fields.get(b"st")),
            ended_at=_ms_to_dt(fields.get(b"et")),
            due_at=_ms_to_dt(fields.get(b"due")) if status is JobStatus.SCHEDULED else None,
            worker=worker.decode() if worker else None,
            error=decode_error(err) if err else None,
            args=args,
            kwargs=kwargs,
        )
