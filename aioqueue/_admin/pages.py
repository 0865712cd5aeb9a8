"""Jobs one page at a time, a job in full, and search: what the dashboard
(``aioqueue.web``) shows of a queue, on an ``aioqueue.admin.Admin``.

Every page costs the same whatever the size of the set it pages through: a
cursor names the last job shown, and the next page starts at that job's rank
(ZRANK/ZREVRANK, O(log N)) in the sorted sets, or at its index in the ready
list; then one ZRANGE or LRANGE of ``limit`` ids and one HMGET per id, all
pipelined. A cursor whose job left the set meanwhile (retried, deleted) goes
on from its score (ZCOUNT, O(log N)). The ready list is paged by index from
its newest end: LRANGE walks to the index, so deep pages of a huge backlog
cost more, never the first pages.

States and what they page through:
  ready      the ready list (newest first)
  scheduled  the sched set by due time (soonest first)
  active     the active set by lease deadline (soonest first)
  dead       the dead set by time of death (newest first)
  completed  the queue's event stream (``completed`` entries, newest first):
             completed jobs are in no set of their own

Search reads the same pages: a job id is looked up directly (one HMGET), and
text (in the task name, the arguments or the error) is matched in a window of
``SEARCH_WINDOW`` jobs from the cursor, with a cursor to search on from.

Garbage never breaks a page: a row that cannot be read says so in ``problem``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from redis.exceptions import ResponseError

from aioqueue._admin.events import parse_entry
from aioqueue._protocol.envelope import ErrorInfo, decode_envelope, decode_error
from aioqueue._protocol.keys import QueueKeys
from aioqueue._redis.errors import refusal
from aioqueue.admin import Admin
from aioqueue.serializers import Serializer

__all__ = ["STATES", "JobRow", "Page", "State", "decode_args", "page", "rows", "search"]

State = Literal["ready", "scheduled", "active", "dead", "completed"]
STATES: tuple[State, ...] = ("ready", "scheduled", "active", "dead", "completed")
PAGE_MAX = 200
SEARCH_WINDOW = 1000  # jobs read per search request
STREAM_READ = 500  # stream entries per XREVRANGE of the completed page
STREAM_READS_MAX = 4
SUMMARY_CHARS = 160
# the job fields a row shows, in this order
ROW_FIELDS = ("s", "d", "a", "e", "q", "st", "et", "due", "w")


def events_key(queue: str) -> str:
    """The queue's event stream (``aq:{<queue>}:events``, docs/reference/events.md)."""
    return QueueKeys(queue).events


@dataclass(frozen=True, slots=True)
class JobRow:
    """One job as a listing shows it; ``score_ms`` is what the state sorts by
    (due time, lease deadline, time of death, time completed)."""

    id: str
    status: str | None
    task: str | None
    attempts: int | None
    args: str
    error_type: str | None
    error_message: str | None
    enqueued_ms: int | None
    started_ms: int | None
    ended_ms: int | None
    worker: str | None
    score_ms: int | None
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class Page:
    """``rows`` of ``state``; ``next_cursor`` None on the last page; ``total`` the
    size of the set (None for ``completed``, which is no set); ``searched`` how
    many jobs a text search read."""

    queue: str
    state: State
    rows: list[JobRow]
    next_cursor: str | None
    total: int | None
    query: str = ""
    searched: int = 0
    exact: list[JobRow] = field(default_factory=list)
    problem: str | None = None  # the state's key holds garbage: nothing to page


class _Garbage(Exception):
    """The key a page reads holds something else (its set-aside is for a worker)."""


def decode_args(payload: bytes | None, serializer: Serializer) -> tuple[str | None, str, str]:
    """(task, the arguments as text, a problem or '') of a job's payload."""
    try:
        envelope = decode_envelope(payload)
    except Exception as exc:  # a listing survives an unreadable payload
        return None, "", f"payload: {exc}"
    try:
        args, kwargs = serializer.loads(envelope.data)
        parts = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in dict(kwargs).items()]
        return envelope.task, ", ".join(parts), ""
    except Exception as exc:  # another serializer than the dashboard's, or garbage
        return envelope.task, "", f"arguments: {type(exc).__name__}"


def as_int(raw: Any) -> int | None:
    try:
        return int(raw) if raw is not None else None
    except (TypeError, ValueError):
        return None


def as_text(raw: Any) -> str | None:
    if raw is None:
        return None
    return raw.decode(errors="backslashreplace") if isinstance(raw, bytes) else str(raw)


def row(job_id: str, fields: Any, score: float | None, serializer: Serializer) -> JobRow:
    """A row from the HMGET of ``ROW_FIELDS``."""
    if isinstance(fields, Exception) or not fields or fields[0] is None:
        problem = f"job record: {fields}" if isinstance(fields, Exception) else "no job record"
        return JobRow(job_id, None, None, None, "", None, None, None, None, None, None,
                      as_int(score), problem)  # fmt: skip
    status, payload, attempts, error, queued, started, ended, _due, worker = fields
    task, args, problem = decode_args(payload, serializer)
    info: ErrorInfo | None = decode_error(error) if error else None
    return JobRow(
        id=job_id,
        status=as_text(status),
        task=task,
        attempts=as_int(attempts),
        args=args if len(args) <= SUMMARY_CHARS else args[: SUMMARY_CHARS - 1] + "…",
        error_type=info.type if info else None,
        error_message=info.message[:SUMMARY_CHARS] if info else None,
        enqueued_ms=as_int(queued),
        started_ms=as_int(started),
        ended_ms=as_int(ended),
        worker=as_text(worker),
        score_ms=as_int(score),
        problem=problem or None,
    )


async def rows(
    admin: Admin, queue: str, entries: list[tuple[str, float | None]], serializer: Serializer
) -> list[JobRow]:
    """The rows of ``entries`` (id, score): one HMGET each, in one pipeline."""
    if not entries:
        return []
    keys = QueueKeys(queue)
    async with admin.redis.pipeline(transaction=False) as pipe:
        for job_id, _ in entries:
            pipe.hmget(keys.job(job_id), list(ROW_FIELDS))
        replies = await pipe.execute(raise_on_error=False)
    return [
        row(job_id, reply, score, serializer)
        for (job_id, score), reply in zip(entries, replies, strict=True)
    ]


def _refused(reply: ResponseError, key: str) -> Exception:
    if str(reply).startswith("WRONGTYPE"):
        return _Garbage(f"{key} holds a value of another type: {reply}")
    return refusal(reply, f"reading {key}")


def _cursor(score: float | None, job_id: str) -> str:
    return f"{'' if score is None else repr(float(score))}:{job_id}"


def _parse_cursor(cursor: str | None) -> tuple[float | None, str] | None:
    if not cursor or ":" not in cursor:
        return None
    score, _, job_id = cursor.partition(":")
    try:
        return (float(score) if score else None), job_id
    except ValueError:
        return None


def decoded(raw: Any) -> str:
    return raw.decode(errors="backslashreplace") if isinstance(raw, bytes) else str(raw)


async def _zset_ids(
    admin: Admin, key: str, cursor: str | None, limit: int, newest_first: bool
) -> tuple[list[tuple[str, float | None]], str | None, int]:
    """A page of (id, score) of sorted set ``key`` after ``cursor``; next cursor; size."""
    after = _parse_cursor(cursor)
    async with admin.redis.pipeline(transaction=False) as pipe:
        pipe.zcard(key)
        if after is not None:
            score, job_id = after
            (pipe.zrevrank if newest_first else pipe.zrank)(key, job_id)
            bound = "-inf" if score is None else repr(score)
            if newest_first:  # members past the cursor's score come first
                pipe.zcount(key, "-inf" if score is None else f"({score!r}", "+inf")
            else:
                pipe.zcount(key, "-inf", bound)
        replies = await pipe.execute(raise_on_error=False)
    for reply in replies:
        if isinstance(reply, ResponseError):
            raise _refused(reply, key)
    total = int(replies[0])
    start = 0
    if after is not None:
        rank, counted = replies[1], replies[2]
        start = int(rank) + 1 if rank is not None else int(counted)
    found: list[Any] = await admin.redis.zrange(
        key, start, start + limit, desc=newest_first, withscores=True
    )
    entries: list[tuple[str, float | None]] = [
        (decoded(member), float(score)) for member, score in found
    ]
    more = len(entries) > limit
    entries = entries[:limit]
    next_cursor = _cursor(entries[-1][1], entries[-1][0]) if more and entries else None
    return entries, next_cursor, total


async def _ready_ids(
    admin: Admin, key: str, cursor: str | None, limit: int
) -> tuple[list[tuple[str, float | None]], str | None, int]:
    start = 0
    if cursor and cursor.isdigit():
        start = int(cursor)
    async with admin.redis.pipeline(transaction=False) as pipe:
        pipe.llen(key)
        pipe.lrange(key, start, start + limit)
        total_raw, found = await pipe.execute(raise_on_error=False)
    for reply in (total_raw, found):
        if isinstance(reply, ResponseError):
            raise _refused(reply, key)
    entries: list[tuple[str, float | None]] = [(decoded(member), None) for member in found]
    more = len(entries) > limit
    return entries[:limit], (str(start + limit) if more else None), int(total_raw)


async def _completed_ids(
    admin: Admin, queue: str, cursor: str | None, limit: int
) -> tuple[list[tuple[str, float | None]], str | None]:
    """Jobs of the newest ``completed`` events before stream id ``cursor``."""
    key = events_key(queue)
    end = f"({cursor}" if cursor else "+"
    entries: list[tuple[str, float | None]] = []
    seen: set[str] = set()
    for _ in range(STREAM_READS_MAX):
        try:
            found: Any = await admin.redis.xrevrange(key, end, "-", count=STREAM_READ)
        except ResponseError as exc:
            raise _refused(exc, key) from None
        for stream_id, fields in found:
            end = f"({decoded(stream_id)}"
            if fields.get(b"event") != b"completed":
                continue
            # newest first; an entry's jobs all go on this page, so its id is the cursor
            for event in reversed(parse_entry(queue, stream_id, fields)):
                if event.job and event.job not in seen:
                    seen.add(event.job)
                    entries.append((event.job, event.ts))
            if len(entries) >= limit:
                return entries, end[1:]
        if len(found) < STREAM_READ:
            return entries, None
    return entries, end[1:]


async def page(
    admin: Admin,
    queue: str,
    state: State,
    serializer: Serializer,
    cursor: str | None = None,
    limit: int = 50,
    *,
    most: int = PAGE_MAX,
) -> Page:
    """One page of ``state``'s jobs after ``cursor`` (None: the first page), of
    ``limit`` jobs (at most ``most``)."""
    limit = max(1, min(limit, most))
    keys = QueueKeys(queue)
    total: int | None = None
    try:
        if state == "completed":
            entries, next_cursor = await _completed_ids(admin, queue, cursor, limit)
        elif state == "ready":
            entries, next_cursor, total = await _ready_ids(admin, keys.ready, cursor, limit)
        else:
            key = {"scheduled": keys.sched, "active": keys.active, "dead": keys.dead}[state]
            entries, next_cursor, total = await _zset_ids(
                admin, key, cursor, limit, newest_first=state == "dead"
            )
    except _Garbage as exc:  # a worker sets the key aside when it meets it
        return Page(queue, state, [], None, None, problem=str(exc))
    return Page(queue, state, await rows(admin, queue, entries, serializer), next_cursor, total)


def matches(found: JobRow, needle: str) -> bool:
    """Whether ``needle`` (lowercase) is in the row's task, arguments or error."""
    haystack = (found.task or "", found.args, found.error_type or "", found.error_message or "")
    return any(needle in text.lower() for text in haystack)


async def search(
    admin: Admin,
    queue: str,
    state: State,
    query: str,
    serializer: Serializer,
    cursor: str | None = None,
    *,
    text: bool = False,
) -> Page:
    """The job whose id is ``query`` (in any state, one HMGET) in ``exact``; when
    there is none, or ``text`` asks, the jobs of ``state`` whose task, arguments or
    error contain ``query`` (any case), among the next ``SEARCH_WINDOW`` after
    ``cursor``."""
    exact: list[JobRow] = []
    if cursor is None and query:
        exact = [r for r in await rows(admin, queue, [(query, None)], serializer) if r.status]
        if exact and not text:
            return Page(queue, state, [], None, None, query, 0, exact)
    needle = query.lower()
    scanned = await page(admin, queue, state, serializer, cursor, SEARCH_WINDOW, most=SEARCH_WINDOW)
    hits = [r for r in scanned.rows if matches(r, needle)]
    # every hit of the window is shown (at most SEARCH_WINDOW): the cursor goes on after it
    return Page(
        queue, state, hits, scanned.next_cursor, scanned.total, query, len(scanned.rows), exact
    )
