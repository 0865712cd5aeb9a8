"""The attribute names and values of the OpenTelemetry messaging semantic conventions
(semconv 1.44, messaging: Development), and aioqueue's own under ``aioqueue.*``.

Written out rather than imported from ``opentelemetry-semantic-conventions``: the
runtime dependency stays ``opentelemetry-api`` alone, and these names do not move
with that package's incubating modules."""

from __future__ import annotations

from aioqueue.middleware import AttemptResult

SYSTEM = "aioqueue"  # messaging.system: a custom value (no well-known one applies)

MESSAGING_SYSTEM = "messaging.system"
DESTINATION_NAME = "messaging.destination.name"
OPERATION_TYPE = "messaging.operation.type"
OPERATION_NAME = "messaging.operation.name"
MESSAGE_ID = "messaging.message.id"
BATCH_MESSAGE_COUNT = "messaging.batch.message_count"
CLIENT_ID = "messaging.client.id"
ERROR_TYPE = "error.type"

TASK_NAME = "aioqueue.task.name"
JOB_ATTEMPT = "aioqueue.job.attempt"
JOB_OUTCOME = "aioqueue.job.outcome"

# outcomes of an attempt that mean its processing failed; "complete" succeeded, and
# "released" (handed back unstarted or unfinished at shutdown) is no failure of the job
FAILED_OUTCOMES = frozenset({"retried", "failed", "timeout", "dead", "aborted", "lost"})

# error.type of a settle the worker's finish call refused: the delivery had been
# handed to another worker (its lease was lost), so this outcome was not recorded
STALE_DELIVERY = "aioqueue.stale_delivery"


def error_type_of(error: BaseException) -> str:
    """The canonical class name the conventions ask for: ``module.qualname``, as
    aioqueue stores it with a failed job (``ErrorInfo.type``)."""
    kind = type(error)
    return f"{kind.__module__}.{kind.__qualname__}"


def attempt_error(result: AttemptResult) -> tuple[str, str] | None:
    """(error.type, status description) of a failed attempt, None when it succeeded.

    The type is the exception's (as stored with the job) when there is one, else the
    outcome itself: ``timeout``, ``dead``, ``aborted``, ``lost`` (a short, fixed list,
    so the attribute keeps its low cardinality)."""
    if result.outcome not in FAILED_OUTCOMES:
        return None
    if result.error_info is not None:
        return result.error_info.type, result.error_info.message
    if result.error is not None:
        return error_type_of(result.error), str(result.error)
    return result.outcome, ""
