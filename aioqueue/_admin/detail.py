"""One job in full (its record, its worker, its events) and the operator's
actions on it, for the dashboard (``aioqueue.web``), on an ``aioqueue.admin.Admin``.

Actions are the library's Functions, one call each: retry is ``requeue`` and
delete is ``purge`` (both of dead jobs only: a job in another state is left as
it is), abort is ``abort`` (queued and scheduled jobs end at once, a running
one is stopped by its worker).

A job's timeline is read from its queue's event stream between its enqueue
time and now (stream ids are Redis ms, the clock of the job's own times), at
most ``TIMELINE_READS`` reads of ``TIMELINE_READ`` entries: on a busy queue
an old job's early events may lie past that, and the timeline says it is partial.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
from redis.exceptions import ResponseError

from aioqueue._admin.events import Event, parse_entry
from aioqueue._admin.pages import as_int, as_text, decode_args, decoded, events_key
from aioqueue._protocol.envelope import ErrorInfo, decode_error
from aioqueue._protocol.keys import QueueKeys
from aioqueue._redis.errors import mapped_errors, refusal
from aioqueue.admin import Admin
from aioqueue.errors import JobNotFound
from aioqueue.serializers import Serializer
from aioqueue.task import DEFAULT_RESULT_TTL

__all__ = ["Event", "JobDetail", "abort", "job_detail", "parse_entry"]

TIMELINE_READ = 1000
TIMELINE_READS = 5
SHOWN_CHARS = 20_000  # of arguments and results: a huge value is cut, with a note


@dataclass(frozen=True, slots=True)
class JobDetail:
    id: str
    queue: str
    status: str
    task: str | None
    args: str
    result: str | None
    error: ErrorInfo | None
    attempts: int | None
    lost: int | None
    enqueued_ms: int | None
    started_ms: int | None
    ended_ms: int | None
    due_ms: int | None
    dead_ms: int | None
    worker: str | None
    worker_host: str | None
    worker_pid: int | None
    abort_requested: bool
    lock: str | None
    expires_in_ms: int | None
    events: list[Event]
    events_partial: bool
    problems: list[str]

    @property
    def can_retry(self) -> bool:
        return self.status == "failed" and self.dead_ms is not None

    @property
    def can_delete(self) -> bool:
        return self.can_retry

    @property
    def can_abort(self) -> bool:
        return self.status in ("queued", "scheduled", "active") and not self.abort_requested


def _shown(text: str) -> str:
    if len(text) <= SHOWN_CHARS:
        return text
    return text[:SHOWN_CHARS] + f"… ({len(text) - SHOWN_CHARS} more characters not shown)"


def _result(raw: bytes | None, serializer: Serializer, problems: list[str]) -> str | None:
    if raw is None:
        return None
    try:
        return _shown(repr(serializer.loads(raw)))
    except Exception as exc:  # another serializer than the dashboard's
        problems.append(f"result: {type(exc).__name__}")
        return _shown(repr(raw))


async def job_detail(admin: Admin, queue: str, job_id: str, serializer: Serializer) -> JobDetail:
    """Everything stored about job ``job_id``; ``JobNotFound`` when nothing is."""
    keys = QueueKeys(queue)
    jkey = keys.job(job_id)
    async with admin.redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(jkey)
        pipe.zscore(keys.dead, job_id)
        pipe.pttl(jkey)
        replies = await pipe.execute(raise_on_error=False)
    fields, dead, pttl = replies
    if isinstance(fields, ResponseError):
        raise refusal(fields, f"reading job {job_id!r}")
    if not fields:
        raise JobNotFound(f"job {job_id} not found in queue {queue!r}", job_id=job_id)
    problems: list[str] = []
    task, args, problem = decode_args(fields.get(b"d"), serializer)
    if problem:
        problems.append(problem)
    error_raw = fields.get(b"e")
    worker = as_text(fields.get(b"w"))
    host, pid = await _worker_of(admin, keys, worker)
    enqueued = as_int(fields.get(b"q"))
    events, partial = await timeline(admin, queue, job_id, enqueued)
    return JobDetail(
        id=job_id,
        queue=queue,
        status=as_text(fields.get(b"s")) or "?",
        task=task,
        args=_shown(args),
        result=_result(fields.get(b"r"), serializer, problems),
        error=decode_error(error_raw) if error_raw else None,
        attempts=as_int(fields.get(b"a")),
        lost=as_int(fields.get(b"l")),
        enqueued_ms=enqueued,
        started_ms=as_int(fields.get(b"st")),
        ended_ms=as_int(fields.get(b"et")),
        due_ms=as_int(fields.get(b"due")),
        dead_ms=None if dead is None or isinstance(dead, Exception) else int(dead),
        worker=worker,
        worker_host=host,
        worker_pid=pid,
        abort_requested=b"ab" in fields,
        lock=as_text(fields.get(b"u")),
        expires_in_ms=pttl if isinstance(pttl, int) and pttl >= 0 else None,
        events=events,
        events_partial=partial,
        problems=problems,
    )


async def _worker_of(
    admin: Admin, keys: QueueKeys, worker: str | None
) -> tuple[str | None, int | None]:
    if not worker:
        return None, None
    try:
        raw = await admin.redis.hget(keys.winfo, worker)
        if not raw:  # the worker has gone (deregistered)
            return None, None
        info = msgspec.json.decode(raw)
    except (ResponseError, msgspec.DecodeError):
        return None, None
    if not isinstance(info, dict):
        return None, None
    pid = info.get("pid")
    return str(info.get("host", "?")), pid if isinstance(pid, int) else None


async def timeline(
    admin: Admin, queue: str, job_id: str, since_ms: int | None
) -> tuple[list[Event], bool]:
    """The job's events, oldest first, and whether older ones may lie past the reads."""
    key = events_key(queue)
    start = f"{max(0, (since_ms or 0) - 1)}-0"
    found: list[Event] = []
    wanted = job_id.encode()
    for _ in range(TIMELINE_READS):
        try:
            entries: Any = await admin.redis.xrange(key, start, "+", count=TIMELINE_READ)
        except ResponseError as exc:
            if "WRONGTYPE" in str(exc):
                return found, False  # garbage where the stream belongs: no timeline
            raise refusal(exc, f"reading {key}") from None
        for stream_id, fields in entries:
            jobs = fields.get(b"job", b"")
            if jobs == wanted or b"n" in fields:  # an entry of several jobs may hold it
                found.extend(e for e in parse_entry(queue, stream_id, fields) if e.job == job_id)
        if len(entries) < TIMELINE_READ:
            return found, False
        start = f"({decoded(entries[-1][0])}"
    return found, True


async def abort(
    admin: Admin, queue: str, job_id: str, result_ttl: float = DEFAULT_RESULT_TTL
) -> str:
    """Aborts the job (the ``abort`` Function, as ``Job.abort``); its status before,
    or 'missing'. The aborted job's record is kept ``result_ttl`` seconds."""
    ttl_ms = -1 if result_ttl < 0 else max(int(result_ttl * 1000), 0 if result_ttl == 0 else 1)
    with mapped_errors(admin.url):
        before = await admin.scripts.abort(queue, job_id, ttl_ms)
    return before or "missing"
