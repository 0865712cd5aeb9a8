"""The public surface is exactly ``__all__``: adding or removing a name is a decision."""

import aioqueue

EXPECTED = {
    "AioqueueError",
    "Call",
    "ConfigurationError",
    "ErrorInfo",
    "Job",
    "JobAborted",
    "JobContext",
    "JobError",
    "JobFailed",
    "JobInfo",
    "JobNotFound",
    "JobOptions",
    "JobStatus",
    "JobTimedOut",
    "JsonSerializer",
    "MalformedJobError",
    "MsgpackSerializer",
    "NotAllEnqueued",
    "NotReplicated",
    "PayloadTooLarge",
    "Queue",
    "QueueClosed",
    "QueueFull",
    "RedisOutOfMemory",
    "RedisRefused",
    "RedisUnavailable",
    "ResultTimeout",
    "Retry",
    "SerializationError",
    "Serializer",
    "SignatureError",
    "Task",
    "UnknownTaskError",
    "Worker",
    "WorkerSettings",
    "__version__",
    "current_job",
    "task",
    "task_ref",
}


def test_all_is_the_public_surface() -> None:
    assert set(aioqueue.__all__) == EXPECTED


def test_every_exported_member_exists_and_belongs_to_aioqueue() -> None:
    for name in aioqueue.__all__:
        member = getattr(aioqueue, name)
        if name == "__version__":
            continue
        assert member.__module__.startswith("aioqueue"), name


def test_every_error_has_the_common_base() -> None:
    errors = [
        getattr(aioqueue, n)
        for n in aioqueue.__all__
        if n.endswith(
            (
                "Error",
                "Failed",
                "Aborted",
                "NotFound",
                "Timeout",
                "Unavailable",
                "TimedOut",
                "Full",
                "Closed",
                "Large",
                "Memory",
            )
        )
    ]
    assert errors
    for error in errors:
        assert issubclass(error, aioqueue.AioqueueError), error
