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

from aioqueue.client import Queue
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
    QueueClosed,
    QueueFull,
    RedisOutOfMemory,
    RedisRefused,
    RedisUnavailable,
    ResultTimeout,
    Retry,
    SerializationError,
    SignatureError,
    UnknownTaskError,
)
from aioqueue.job import ErrorInfo, JobInfo, JobStatus
from aioqueue.results import Job
from aioqueue.serializers import JsonSerializer, MsgpackSerializer, Serializer
from aioqueue.settings import WorkerSettings
from aioqueue.task import Call, JobOptions, Task, task, task_ref
from aioqueue.worker import Worker

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
]
