"""Middleware: one hook protocol around every job, on the producer and on the worker.

```
producer   Queue.enqueue / enqueue_many
             before_enqueue(enqueue)      may add headers to each message
             ... the enqueue Function call ...
             after_enqueue(enqueue, error)

worker     on_worker_start(worker)
             claim → for each delivery:
               before_attempt(attempt)    in the job's own task and context
               ... the task runs ...
               after_attempt(attempt, result)
               ... the batched finish call ...
               on_settled(attempt, result)  result.written says if it was recorded
           on_worker_stop(worker)
```

A middleware is an object with any of these methods (subclass ``Middleware`` and
override what you need). Each hook may be a plain ``def`` or an ``async def``; which
one is looked up once, when the middleware is installed, so a plain hook costs a call
and nothing more. A hook set to None on the instance is not called at all: the way for
a middleware that knows, when it is made, that it has nothing to do (the OpenTelemetry
one given no-op providers) to cost nothing. Hooks run in the order the middleware
were given (``after_*`` and ``on_settled`` too: each middleware sees the same sequence
of calls).

A hook that raises is logged as ``middleware.failed`` and skipped: no middleware can
fail a job, lose an outcome or stop a worker. ``headers`` are the one thing a
producer's middleware can pass to the worker's: they travel in the job's envelope
(signed with it when the Queue signs).

aioqueue itself runs on this seam: the worker's ``job.completed``, ``job.retrying``,
``job.failed`` and ``job.stopped`` log lines come from a built-in middleware that is
always first; ``aioqueue.prometheus`` and ``aioqueue.otel`` are middleware too.

``install(m)`` adds a middleware to every ``Queue`` and ``Worker`` made afterwards in
the process, after the ones each is given (an instrumentor's way in: no constructor
is wrapped).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from aioqueue._protocol.envelope import ErrorInfo

__all__ = [
    "Attempt",
    "AttemptResult",
    "Enqueue",
    "Message",
    "Middleware",
    "Outcome",
    "WorkerInfo",
    "install",
    "installed",
    "uninstall",
]

Outcome = Literal["complete", "retried", "failed", "timeout", "dead", "aborted", "released", "lost"]
"""How an attempt ended.

``complete``: it returned. ``retried``: it raised and runs again. ``failed``: it raised
with no attempts left and was dead-lettered. ``timeout``: it ran past its timeout
(``retry_in`` says whether it runs again). ``dead``: dead-lettered without an attempt
that could succeed (no such task here, arguments that do not decode, bad options, lost
with dead workers too often). ``aborted``: aborted while queued or running.
``released``: handed back unstarted or stopped at a shutdown, to run elsewhere.
``lost``: its lease was lost; another worker owns the job now.
"""


@dataclass(slots=True)
class Message:
    """One job of an enqueue call, as the producer's middleware see it.

    Attributes:
        queue: the queue it goes to.
        task: the task's name.
        job_id: its id (made up before the call when not given).
        headers: strings carried to the worker in the job's envelope; add to it in
            ``before_enqueue`` (a trace context, a tenant id).
        delay: seconds it waits before it is due (0: none).
        at: the instant it is due, when given as ``at=``.
    """

    queue: str
    task: str
    job_id: str
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    at: datetime | None = None


@dataclass(slots=True)
class Enqueue:
    """One ``enqueue`` or ``enqueue_many`` call.

    Attributes:
        messages: its jobs, in order.
        many: it is an ``enqueue_many`` call.
        started: ``time.perf_counter()`` when it began.
        state: scratch space for this call's hooks (keyed by middleware, by convention).
    """

    messages: list[Message]
    many: bool
    started: float
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def queue(self) -> str:
        """The first message's queue (an ``enqueue_many`` may span several)."""
        return self.messages[0].queue


@dataclass(slots=True)
class Attempt:
    """One delivery of a job to this worker.

    Attributes:
        job_id: the job's id.
        queue: its queue.
        task: its task's name (one this worker may not know: then the result is ``dead``).
        attempt: 1 for the first attempt, counting every delivery.
        lost: earlier deliveries lost with dead workers (more than 0: this one follows
            a lease reclaim).
        worker_id: this worker's id.
        headers: what the producer's middleware put in the envelope.
        wait: seconds from when the job was due (its enqueue, the end of its delay or of
            a retry's backoff) to its claim; None when not known.
        started: ``time.perf_counter()`` when the attempt began.
        state: scratch space for this attempt's hooks.
    """

    job_id: str
    queue: str
    task: str
    attempt: int
    lost: int
    worker_id: str
    headers: Mapping[str, str]
    wait: float | None
    started: float
    state: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class AttemptResult:
    """How an attempt ended (see ``Outcome``).

    Attributes:
        outcome: how it ended.
        error: the exception it ended with, if any.
        error_info: the error as stored with the job (type, message, traceback).
        duration: seconds it ran.
        retry_in: seconds until it runs again, when it does.
        written: in ``on_settled``: True when the outcome was recorded, False when
            Redis refused it as stale (the lease had passed to another worker).
    """

    outcome: Outcome
    error: BaseException | None = None
    error_info: ErrorInfo | None = None
    duration: float = 0.0
    retry_in: float | None = None
    written: bool | None = None


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """The worker starting or stopping.

    Attributes:
        worker_id: its id.
        queues: the queues it serves.
        concurrency: the most jobs it runs at once.
        tasks: the names of the tasks it knows.
    """

    worker_id: str
    queues: tuple[str, ...]
    concurrency: int
    tasks: tuple[str, ...]


class Middleware:
    """Base class of middleware: every hook does nothing until overridden.

    Give instances to ``Queue(middleware=[...])`` for the producer's hooks and to
    ``Worker(middleware=[...])`` for the worker's; one object may serve both.
    """

    def before_enqueue(self, enqueue: Enqueue) -> Any:
        """Before the jobs are sent: add to each ``message.headers`` here."""

    def after_enqueue(self, enqueue: Enqueue, error: BaseException | None) -> Any:
        """After the call: ``error`` is what it raised, or None when the jobs are stored."""

    def on_worker_start(self, worker: WorkerInfo) -> Any:
        """The worker is connected and about to claim its first jobs."""

    def on_worker_stop(self, worker: WorkerInfo) -> Any:
        """The worker has drained and written its last outcomes."""

    def before_attempt(self, attempt: Attempt) -> Any:
        """Before the task runs, in the task's own context (a context variable set here
        is seen by the task's code)."""

    def after_attempt(self, attempt: Attempt, result: AttemptResult) -> Any:
        """After the task ran (or could not), in the same context as ``before_attempt``."""

    def on_settled(self, attempt: Attempt, result: AttemptResult) -> Any:
        """After the outcome's finish call; ``result.written`` says if it was recorded."""


_installed: list[object] = []


def install(middleware: object) -> None:
    """Adds ``middleware`` to every ``Queue`` and ``Worker`` made from now on in this
    process, after the middleware each is given; one already given an instance of the
    same class does not get a second. Installing the same object twice changes nothing.
    """
    if not any(m is middleware for m in _installed):
        _installed.append(middleware)


def uninstall(middleware: object) -> None:
    """Stops adding ``middleware`` (Queues and Workers made already keep it)."""
    _installed[:] = [m for m in _installed if m is not middleware]


def installed() -> tuple[object, ...]:
    """The middleware ``install`` added, in order."""
    return tuple(_installed)
