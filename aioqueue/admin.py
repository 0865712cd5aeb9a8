"""What on-call asks of Redis: queues and their depths, workers alive, throughput,
dead jobs, and retrying or purging those. ``aioqueue info``/``jobs``/``check`` render it.

Depths: queued = LLEN ready + LLEN cpu (CPU-bound jobs a claim moved aside),
scheduled = ZCARD sched, active = ZCARD active, failed = ZCARD dead. A worker
is alive while its last heartbeat (Redis time) is younger than its lease: past
that, its jobs are handed to others anyway.
Throughput comes from the per-10-second counters the Lua ``finish`` function
keeps (``tput:<bucket>``): the last five full buckets plus the current one.

Queue discovery (``discover()``) SCANs for ``aq:{*}:`` keys that every live
queue has one of (ready, sched, stats, dead, workers), COUNT ``SCAN_COUNT``
per call, and stops after ``SCAN_CALLS_MAX`` calls or ``QUEUES_MAX`` queues,
so a huge keyspace never makes ``info`` slow: name the queues (``--queue``)
when it reports it stopped early. On a Redis Cluster each primary holds the
keys of its own slots only, so every primary is scanned with a cursor of its
own, in turn, within the same budget of calls.

Every per-queue read is one pipeline of single-key commands on that queue's
keys: they share the hash tag ``{queue}``, so on a cluster the whole pipeline
goes to the one primary that owns the queue, still in one round trip. Nothing
reads keys of two queues in one command.

Garbage never stops a listing: a key of the wrong type or a value that does
not parse reads as unknown (None, '?') and is named in ``problems`` (per
queue) or ``problem`` (per dead job), and the rest is shown (the records and
their readers: ``aioqueue._admin.records``).

Bulk actions (``requeue``/``purge`` of every dead job) act on the jobs dead
when they start, once each: they work in pages of ``PAGE`` ids through the
dead jobs scored below the newest score seen at the start, then through those
with that very score, read at the start. A job that fails again meanwhile is
dead-lettered anew with a later score (Redis time) and left alone, so one
command never runs a job twice; each call has its own deadline, however many
jobs there are.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal, TypeVar

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import ResponseError

from aioqueue._admin import events
from aioqueue._admin.events import Event
from aioqueue._admin.records import (
    DeadJob,
    QueueInfo,
    Reader,
    WorkerInfo,
    counters,
    dead_job,
    queue_names,
    worker_info,
)
from aioqueue._protocol.functions import Scripts
from aioqueue._protocol.keys import EVENTS_MAXLEN, THROUGHPUT_BUCKET_MS, QueueKeys
from aioqueue._redis.cluster import initialize
from aioqueue._redis.connect import RedisClient, connect_any
from aioqueue._redis.errors import mapped_errors, refusal, where
from aioqueue._redis.retry import deadline
from aioqueue.errors import AioqueueError

__all__ = ["Admin", "DeadJob", "Event", "QueueInfo", "WorkerInfo"]

SCAN_COUNT = 1000
SCAN_CALLS_MAX = 100  # at most ~100,000 keys looked at
QUEUES_MAX = 500
THROUGHPUT_BUCKETS = 6
PAGE = 1000  # dead job ids per read and per Function call of a bulk action
T = TypeVar("T")
_QUEUE_KEY_MATCH = "aq:{*}:[rsdw]*"  # the SCAN pattern: a superset of records.QUEUE_KEY


class Admin:
    """``async with Admin(url) as admin:`` queries on one Redis connection pool.

    What ``aioqueue info``, ``check`` and ``jobs`` are built on.

    Args:
        url: the Redis, as for ``Queue``.
        timeout: the deadline of each call of a bulk action (``requeue``, ``purge``).
        events_maxlen: the cap of the event streams its actions add to (as the
            workers' setting; 0: they add nothing).

    Attributes:
        url: as given.
        timeout: as given.
        redis: its redis-py client.
        scripts: the typed wrappers of the Functions library (internal).
    """

    def __init__(
        self, url: str, *, timeout: float = 5.0, events_maxlen: int = EVENTS_MAXLEN
    ) -> None:
        self.url = url
        self.timeout = timeout  # the deadline of each call of a bulk action
        # reads have no deadline of their own: the CLI bounds each command
        self.redis: RedisClient = connect_any(url, connect_timeout=timeout)
        self.scripts = Scripts(self.redis, timeout, events_maxlen=events_maxlen)

    async def __aenter__(self) -> Admin:
        try:
            await self.redis.ping()
        except BaseException:
            await self.redis.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.scripts.aclose()
        await self.redis.aclose()

    async def now_ms(self) -> int:
        """The Redis server's time, in Unix ms."""
        seconds, micros = await self.redis.time()
        return int(seconds) * 1000 + int(micros) // 1000

    async def discover(self) -> tuple[list[str], bool]:
        """Queue names found by a bounded SCAN (of every primary of a cluster); the
        flag says the scan stopped early."""
        nodes: list[ClusterNode | None] = [None]  # None: the one Redis there is
        if isinstance(self.redis, RedisCluster):
            await initialize(self.redis)
            nodes = list(self.redis.get_primaries())
        found: set[str] = set()
        cursors = dict.fromkeys(range(len(nodes)), 0)  # node index -> its next cursor
        calls = 0
        while cursors:
            # one call per node in turn: every node is looked at before the budget ends
            for index, cursor in list(cursors.items()):
                if calls >= SCAN_CALLS_MAX or len(found) >= QUEUES_MAX:
                    return sorted(found)[:QUEUES_MAX], True
                calls += 1
                cursor, keys = await self._scan(nodes[index], cursor)
                found.update(queue_names(keys))
                if cursor == 0:
                    del cursors[index]
                else:
                    cursors[index] = cursor
        return sorted(found), False

    async def _scan(self, node: ClusterNode | None, cursor: int) -> tuple[int, list[Any]]:
        """One SCAN call: on the one Redis, or on cluster node ``node``."""
        if node is None:
            next_cursor, keys = await self.redis.scan(
                cursor, match=_QUEUE_KEY_MATCH, count=SCAN_COUNT
            )
            return int(next_cursor), list(keys)
        # a cluster SCAN answers with a cursor per node name (typed as a plain SCAN's)
        answer: Any = await self.redis.scan(
            cursor, match=_QUEUE_KEY_MATCH, count=SCAN_COUNT, target_nodes=node
        )
        by_node, keys = answer
        return int(by_node[node.name]), list(keys)

    async def queue(self, name: str, now_ms: int | None = None) -> QueueInfo:
        """Queue ``name``'s depths, workers and throughput, in one round trip."""
        keys = QueueKeys(name)
        now = now_ms if now_ms is not None else await self.now_ms()
        bucket = now // THROUGHPUT_BUCKET_MS
        buckets = [keys.finished_in(bucket - i) for i in range(THROUGHPUT_BUCKETS)]
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.llen(keys.ready)
            pipe.zcard(keys.sched)
            pipe.zcard(keys.active)
            pipe.zcard(keys.dead)
            pipe.hgetall(keys.stats)
            pipe.zrange(keys.workers, 0, -1, withscores=True)
            pipe.hgetall(keys.winfo)
            pipe.llen(keys.cpu)  # CPU-bound jobs a claim moved aside: queued all the same
            # a GET each, not one MGET: a cluster pipeline refuses MGET (even on one slot)
            for bucket_key in buckets:
                pipe.get(bucket_key)
            # error replies come back in place: one garbage key spoils only its own line
            replies = await pipe.execute(raise_on_error=False)
        read = Reader()
        queued, sched, active, dead = (
            read.value(what, reply, int, None)
            for what, reply in zip(("ready", "sched", "active", "dead"), replies, strict=False)
        )
        stats: dict[str, int] = read.value("stats", replies[4], counters, {})
        beats: list[Any] = read.value("workers", replies[5], list, [])
        infos: dict[Any, Any] = read.value("winfo", replies[6], dict, {})
        aside = read.value("cpu", replies[7], int, 0)
        finished = sum(
            read.value(f"tput:{bucket - i}", count, int, 0)
            for i, count in enumerate(replies[8:])
            if count is not None
        )
        window = (THROUGHPUT_BUCKETS - 1) * THROUGHPUT_BUCKET_MS + now % THROUGHPUT_BUCKET_MS
        workers = [
            worker_info(
                name, wid.decode(errors="backslashreplace"), score, infos.get(wid), now, read
            )
            for wid, score in beats
        ]
        return QueueInfo(
            name=name,
            queued=None if queued is None else queued + aside,
            scheduled=sched,
            active=active,
            failed=dead,
            workers=workers,
            finished_last_minute=finished,
            per_second=round(finished / (window / 1000), 2) if window else 0.0,
            stats=stats,
            problems=read.problems,
        )

    async def events(
        self, queue: str, *, after: str | None = None, count: int = 100
    ) -> list[Event]:
        """Events of ``queue``'s stream, oldest first: the newest ``count``, or those
        of the first ``count`` entries after stream id ``after`` (``"0"``: from the
        oldest kept). The jobs one Function call moved share an entry and its id, so
        a read after an id returns whole entries (it may hold more than ``count``).
        A stream key holding another type raises ``RedisRefused`` (code WRONGTYPE)."""
        return await events.read(self.redis, queue, after, max(1, count))

    async def last_event_id(self, queue: str) -> str:
        """The stream id of ``queue``'s newest event ('0-0' when it has none): follow
        from it to see what happens from now on."""
        return await events.last_id(self.redis, queue)

    async def follow_events(
        self, after: Mapping[str, str], *, count: int = 500, block: float = 5.0
    ) -> list[Event]:
        """The events that follow each queue's stream id in ``after`` (queue -> id),
        blocking up to ``block`` seconds for the first (one XREAD BLOCK, no polling);
        [] when none came. On a Redis Cluster, one queue per call (each stream is in
        its queue's slot)."""
        return await events.follow(self.redis, after, max(1, count), max(1, int(block * 1000)))

    async def dead_jobs(self, name: str, limit: int) -> list[DeadJob]:
        """The newest ``limit`` dead-lettered jobs of queue ``name``.

        A dead set of the wrong type raises ``RedisRefused``; a job whose record
        cannot be read is listed with its ``problem``.
        """
        keys = QueueKeys(name)
        try:
            entries: list[Any] = await self.redis.zrange(
                keys.dead, 0, limit - 1, desc=True, withscores=True
            )
        except ResponseError as exc:
            raise refusal(exc, f"reading the dead jobs of {name!r}") from None
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id, _ in entries:
                pipe.hmget(keys.prefix.encode() + b"j:" + job_id, "d", "a", "e")
            rows = await pipe.execute(raise_on_error=False)
        return [
            dead_job(name, job_id, score, row)
            for (job_id, score), row in zip(entries, rows, strict=True)
        ]

    async def requeue(
        self, name: str, ids: Sequence[str] | None, progress: Callable[[int], None] | None = None
    ) -> int:
        """Puts dead jobs (``ids``, or every one dead now when None) back in the ready
        list; returns how many. ``progress`` is told the count after each call."""
        return await self._each_dead(name, ids, "requeue", progress)

    async def purge(
        self, name: str, ids: Sequence[str] | None, progress: Callable[[int], None] | None = None
    ) -> int:
        """Deletes dead jobs (``ids``, or every one dead now when None)."""
        return await self._each_dead(name, ids, "purge", progress)

    async def _each_dead(
        self,
        name: str,
        ids: Sequence[str] | None,
        action: Literal["requeue", "purge"],
        progress: Callable[[int], None] | None,
    ) -> int:
        act = self.scripts.requeue if action == "requeue" else self.scripts.purge
        pages = _pages(list(dict.fromkeys(ids))) if ids is not None else self._dead_now(name)
        done = 0
        async for page in pages:
            with mapped_errors(self.url, self.timeout):
                done += await act(name, page)  # its own deadline: Scripts' timeout
            if progress is not None:
                progress(done)
        return done

    async def _dead_now(self, name: str) -> AsyncIterator[list[Any]]:
        """Pages of the ids dead now, oldest first, each read after the one before
        was acted on (which takes it out of the dead set)."""
        dead = QueueKeys(name).dead
        what = f"reading the dead jobs of {name!r}"
        newest: list[Any] = await self._bounded(
            self.redis.zrange(dead, -1, -1, withscores=True), what
        )
        if not newest:
            return
        cutoff = repr(float(newest[0][1]))
        # read now: a job dead-lettered again later can get this same millisecond
        at_cutoff: list[Any] = []
        while True:
            page: list[Any] = await self._bounded(
                self.redis.zrange(
                    dead, cutoff, cutoff, byscore=True, offset=len(at_cutoff), num=PAGE
                ),
                what,
            )
            at_cutoff += page
            if len(page) < PAGE:
                break
        before: list[Any] | None = None
        while True:
            page = await self._bounded(
                self.redis.zrange(dead, "-inf", f"({cutoff}", byscore=True, offset=0, num=PAGE),
                what,
            )
            if not page:
                break
            if page == before:  # the action left them there: never loop on them
                raise AioqueueError(
                    f"dead jobs of {name!r} stay dead after {len(page)} were acted on"
                )
            before = page
            yield page
        async for page in _pages(at_cutoff):
            yield page

    async def _bounded(self, call: Awaitable[T], what: str) -> T:
        with mapped_errors(self.url), deadline(self.timeout, where(self.url)):
            try:
                return await call
            except ResponseError as exc:
                raise refusal(exc, what) from None


async def set_aside_record(redis: RedisClient, queue: str, job_id: str) -> tuple[str, str] | None:
    """Where a worker set job ``job_id`` aside (its garbage key) and why, if it did.

    The garbage index holds the key names; the job's is ``garbage:j:<id>:<ms>``.
    A bounded look (``SCAN_CALLS_MAX`` calls): None when not found in it.
    """
    keys = QueueKeys(queue)
    pattern = _glob_escape(f"{keys.prefix}garbage:j:{job_id}:") + "*"
    cursor = 0
    for _ in range(SCAN_CALLS_MAX):
        cursor, found = await redis.zscan(keys.garbage, cursor, match=pattern, count=SCAN_COUNT)
        if found:
            key: Any = found[0][0]
            reason: Any = await redis.hget(keys.garbage_why, key)  # the garbage area's reasons
            as_text = key.decode(errors="backslashreplace")
            return as_text, reason.decode(errors="backslashreplace") if reason else ""
        if cursor == 0:
            return None
    return None


def _glob_escape(text: str) -> str:
    """``text`` matched literally by a Redis glob pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


async def _pages(ids: list[Any]) -> AsyncIterator[list[Any]]:
    for i in range(0, len(ids), PAGE):
        yield ids[i : i + PAGE]
