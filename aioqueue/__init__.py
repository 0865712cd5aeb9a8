"""aioqueue: an asyncio job queue on Redis.

from aioqueue import Queue, Worker, task

@task
async def add(a: int, b: int) -> int:
    return a + b

worker = Worker([add])                  # aioqueue run app.tasks:worker

async with Queue() as queue:            # in the web app
    job = await queue.enqueue(add, 1, 2)
    assert await job == 3
"""

from aioqueue import _moved
from aioqueue._client.job import Job
from aioqueue._client.queue import Queue
from aioqueue._protocol.envelope import ErrorInfo, JobInfo, JobStatus
from aioqueue._worker.settings import WorkerSettings
from aioqueue._worker.worker import Worker
from aioqueue.context import JobContext, current_job
from aioqueue.errors import (
    AioqueueError,
    ConfigurationError,
    JobAborted,
    JobError,
    JobFailed,
    JobNotFound,
    JobTimedOut,
    MalformedJobError,
    NotAllEnqueued,
    NotReplicated,
    PayloadTooLarge,
    PoolProcessLost,
    QueueClosed,
    QueueFull,
    RedisOutOfMemory,
    RedisRefused,
    RedisUnavailable,
    ResultTimeout,
    Retry,
    SerializationError,
    SignatureError,
    TransientError,
    UnknownTaskError,
    WorkerLost,
)
from aioqueue.serializers import JsonSerializer, MsgpackSerializer, Serializer
from aioqueue.task import Call, JobOptions, Task, task, task_ref

__version__ = "0.1.0"

__all__ = [
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
    "PoolProcessLost",
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
    "TransientError",
    "UnknownTaskError",
    "Worker",
    "WorkerLost",
    "WorkerSettings",
    "__version__",
    "current_job",
    "task",
    "task_ref",
]


# Every public name says it is aioqueue's (``aioqueue.Queue``, not a private module path) in
# reprs, tracebacks and the API reference. Exceptions keep their module, ``aioqueue.errors``:
# a failed job stores its error's type by that name. A class whose annotations are resolved by
# name at run time (``typing.get_type_hints``: FastAPI, pydantic, msgspec) keeps its module too,
# since its annotations name things only that module holds.
def _claim_public_names() -> None:
    import typing

    for name in __all__:
        obj = globals()[name]
        module = getattr(obj, "__module__", "")
        if not module.startswith("aioqueue.") or (
            isinstance(obj, type) and issubclass(obj, BaseException)
        ):
            continue
        obj.__module__ = "aioqueue"
        if isinstance(obj, type):
            try:
                typing.get_type_hints(obj)
            except NameError:
                obj.__module__ = module


_claim_public_names()
_moved.install()
