"""What ``aioqueue.admin`` reads, as records, from replies that may hold garbage.

Garbage never stops a listing: a key of the wrong type or a value that does
not parse reads as unknown (None, '?') and is named in ``problems`` (per
queue) or ``problem`` (per dead job), and the rest is shown. The records are
``aioqueue.admin``'s public types (and say so in their ``__module__``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec
from redis.exceptions import NoPermissionError

from aioqueue._protocol.envelope import decode_envelope, decode_error
from aioqueue._protocol.keys import check_queue_name
from aioqueue._redis.errors import refusal
from aioqueue.errors import ConfigurationError

__all__ = [
    "QUEUE_KEY",
    "DeadJob",
    "QueueInfo",
    "Reader",
    "WorkerInfo",
    "counters",
    "dead_job",
    "queue_names",
    "worker_info",
]

T = TypeVar("T")
DEFAULT_LEASE = 30.0  # of a worker whose info does not say
# the keys every live queue has one of (ready, sched, stats, dead, workers)
QUEUE_KEY = re.compile(rb"^aq:\{([^{}]+)\}:(ready|sched|stats|dead|workers)$")


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A worker registered on a queue, as its last heartbeat left it.

    Attributes:
        id: the worker's id.
        queue: the queue it was read from.
        host: its host name.
        pid: its process id (None if unreadable).
        running: jobs it ran at its last heartbeat.
        done: jobs it finished since it started.
        concurrency: its concurrency.
        seconds_since_heartbeat: age of its last heartbeat (Redis time).
        alive: that age is within its lease.
    """

    id: str
    queue: str
    host: str
    pid: int | None
    running: int
    done: int
    concurrency: int
    seconds_since_heartbeat: float
    alive: bool


@dataclass(frozen=True, slots=True)
class QueueInfo:
    """A queue's depths; None where the key holds garbage (see ``problems``).

    Attributes:
        name: the queue.
        queued: jobs ready to run (the ready list plus CPU-bound jobs set aside
            by a claim).
        scheduled: jobs due later.
        active: jobs leased to workers.
        failed: dead-lettered jobs.
        workers: the workers registered on it, alive or not.
        finished_last_minute: jobs finished over the last minute.
        per_second: that, per second.
        stats: the queue's counters (``complete``, ``failed``, ``retried``, ...).
        problems: garbage met while reading, one line each.
        workers_alive: how many of ``workers`` are alive.
    """

    name: str
    queued: int | None
    scheduled: int | None
    active: int | None
    failed: int | None
    workers: list[WorkerInfo]
    finished_last_minute: int
    per_second: float
    stats: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def workers_alive(self) -> int:
        """How many of ``workers`` are alive."""
        return sum(1 for w in self.workers if w.alive)


@dataclass(frozen=True, slots=True)
class DeadJob:
    """A dead-lettered job; ``problem`` says what of its record could not be read.

    Attributes:
        id: the job id.
        queue: its queue.
        task: its task's name (None if unreadable).
        attempts: attempts it had (None if unreadable).
        error_type: ``module.qualname`` of its last error.
        error_message: that error's message.
        failed_at_ms: when it was dead-lettered (Unix ms, Redis time).
        problem: what could not be read, or None.
    """

    id: str
    queue: str
    task: str | None
    attempts: int | None
    error_type: str
    error_message: str
    failed_at_ms: int
    problem: str | None = None


class Reader:
    """Parses replies that may be garbage, noting each that is."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def value(self, what: str, reply: Any, parse: Callable[[Any], T], default: T) -> T:
        if isinstance(reply, NoPermissionError):  # not garbage: nothing here can be read
            raise refusal(reply, f"reading {what}")
        if isinstance(reply, Exception):
            self.problems.append(f"{what}: {reply}")
            return default
        try:
            return parse(reply)
        except (ValueError, TypeError, AttributeError) as exc:
            self.problems.append(f"{what}: unreadable value ({exc})")
            return default


def counters(raw: dict[bytes, bytes]) -> dict[str, int]:
    return {
        k.decode(errors="backslashreplace"): int(v)
        for k, v in raw.items()
        if v.lstrip(b"-").isdigit()
    }


def dead_job(name: str, raw_id: bytes, score: float, row: Any) -> DeadJob:
    problems: list[str] = []
    try:
        job_id = raw_id.decode()
    except UnicodeDecodeError:
        job_id = raw_id.decode(errors="backslashreplace")
        problems.append("id is not UTF-8")
    payload = attempts_raw = error_blob = None
    if isinstance(row, Exception):
        problems.append(f"job record: {row}")
    else:
        payload, attempts_raw, error_blob = row
    task: str | None = None
    if payload is not None:
        try:
            task = decode_envelope(payload).task
        except Exception as exc:  # a listing must survive an unreadable job
            problems.append(f"payload: {exc}")
    attempts: int | None = 0
    if attempts_raw is not None:
        try:
            attempts = int(attempts_raw)
        except ValueError:
            attempts = None
            problems.append(f"attempts: not a number ({attempts_raw[:40]!r})")
    error = decode_error(error_blob)
    return DeadJob(
        id=job_id,
        queue=name,
        task=task,
        attempts=attempts,
        error_type=error.type,
        error_message=error.message,
        failed_at_ms=int(score),
        problem="; ".join(problems) or None,
    )


def queue_names(keys: list[Any]) -> set[str]:
    """The queue names in SCAN results that are keys every live queue has one of
    (a planted key whose name no queue can have is no queue)."""
    names = set()
    for key in keys:
        m = QUEUE_KEY.match(key if isinstance(key, bytes) else key.encode())
        if m:
            try:
                names.add(check_queue_name(m.group(1).decode()))
            except (UnicodeDecodeError, ConfigurationError):
                continue
    return names


def worker_info(
    queue: str, wid: str, score: float, raw: Any, now_ms: int, read: Reader
) -> WorkerInfo:
    info: dict[str, Any] = {}
    if raw:
        try:
            decoded = msgspec.json.decode(raw)
            info = decoded if isinstance(decoded, dict) else {}
        except msgspec.DecodeError:
            read.problems.append(f"winfo {wid}: not JSON")
    age = max(0.0, (now_ms - score) / 1000)
    lease = info.get("lease", DEFAULT_LEASE)
    lease = float(lease) if isinstance(lease, int | float) else DEFAULT_LEASE
    pid = info.get("pid")

    def count(field: str) -> int:
        value = info.get(field, 0) or 0
        if isinstance(value, int):
            return value
        read.problems.append(f"winfo {wid}: {field} is not a number")
        return 0

    return WorkerInfo(
        id=wid,
        queue=queue,
        host=str(info.get("host", "?")),
        pid=pid if isinstance(pid, int) else None,
        running=count("running"),
        done=count("done"),
        concurrency=count("concurrency"),
        seconds_since_heartbeat=round(age, 3),
        alive=age <= lease,
    )


for _record in (WorkerInfo, QueueInfo, DeadJob):
    _record.__module__ = "aioqueue.admin"  # their public home
