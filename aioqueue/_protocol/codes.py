"""Stable codes stored beside a failure's ``exc_type``, for failures aioqueue itself
decides (``JobFailed.code``; '' when the task's own code raised).

A stored record outlives the code that wrote it: ``exc_type`` names a class by its
module path, which may move, while these names never change once released (add
new ones; never rename or reuse one). The Lua library writes ``aborted`` and
``lock_held`` itself.
"""

from __future__ import annotations

from aioqueue.errors import (
    JobAborted,
    PayloadTooLarge,
    PoolProcessLost,
    SerializationError,
    UnknownTaskError,
    WorkerLost,
)

__all__ = ["code_of"]

WORKER_LOST = "worker_lost"  # lost with dead workers on max_lost deliveries
POOL_PROCESS_LOST = "pool_process_lost"  # its process-pool child died under it
UNKNOWN_TASK = "unknown_task"  # no task of that name in the worker
BAD_OPTIONS = "bad_options"  # a timeout, max_attempts, result_ttl or Retry(defer) that cannot work
BAD_ARGUMENTS = "bad_arguments"  # arguments the worker's serializer cannot decode
RESULT_TOO_LARGE = "result_too_large"  # over the worker's max_result_size
RESULT_NOT_SERIALIZABLE = "result_not_serializable"  # the serializer refused the result
TIMEOUT = "timeout"  # ran past its timeout on its last attempt
ABORTED = "aborted"  # aborted (by job.abort(), aioqueue jobs abort, the dashboard)
LOCK_HELD = "lock_held"  # dropped: its lock was held (lock mode 'drop')
INTERNAL = "internal"  # building the outcome raised what no check foresaw

CODES = frozenset(
    {
        WORKER_LOST,
        POOL_PROCESS_LOST,
        UNKNOWN_TASK,
        BAD_OPTIONS,
        BAD_ARGUMENTS,
        RESULT_TOO_LARGE,
        RESULT_NOT_SERIALIZABLE,
        TIMEOUT,
        ABORTED,
        LOCK_HELD,
        INTERNAL,
    }
)

# most specific first: PayloadTooLarge is a SerializationError
_BY_CLASS: tuple[tuple[type[BaseException], str], ...] = (
    (WorkerLost, WORKER_LOST),
    (PoolProcessLost, POOL_PROCESS_LOST),
    (UnknownTaskError, UNKNOWN_TASK),
    (PayloadTooLarge, RESULT_TOO_LARGE),
    (SerializationError, RESULT_NOT_SERIALIZABLE),
    (JobAborted, ABORTED),
)


def code_of(exc: BaseException, *, timed_out: bool = False) -> str:
    """The code of a failure aioqueue raised itself; '' for the task's own errors."""
    if timed_out:
        return TIMEOUT
    for cls, code in _BY_CLASS:
        if isinstance(exc, cls):
            return code
    return ""
