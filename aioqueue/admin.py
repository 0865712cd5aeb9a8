"""What on-call asks of Redis: queues and their depths, workers alive, throughput,
dead jobs, and retrying or purging those. ``aioqueue info``/``jobs``/``check`` render it.

Depths: queued = LLEN ready, scheduled = ZCARD sched, active = ZCARD active,
failed = ZCARD dead. A worker is alive while its last heartbeat (Redis time) is
younger than its lease: past that, its jobs are handed to others anyway.
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
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import msgspec
from redis.asyncio.cluster import ClusterNode, RedisCluster

from aioqueue.cluster import initialize
from aioqueue.connection import RedisClient, connect_any
from aioqueue.job import decode_envelope, decode_error
from aioqueue.keys import THROUGHPUT_BUCKET_MS, QueueKeys
from aioqueue.scripts import Scripts

__all__ = ["Admin", "DeadJob", "QueueInfo", "WorkerInfo"]

SCAN_COUNT = 1000
SCAN_CALLS_MAX = 100  # at most ~100,000 keys looked at
QUEUES_MAX = 500
THROUGHPUT_BUCKETS = 6
DEFAULT_LEASE = 30.0
_QUEUE_KEY = re.compile(rb"^aq:\{([^{}]+)\}:(ready|sched|stats|dead|workers)$")
_QUEUE_KEY_MATCH = "aq:{*}:[rsdw]*"  # the SCAN pattern: a superset of _QUEUE_KEY


@dataclass(frozen=True, slots=True)
class WorkerInfo:
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
    name: str
    queued: int
    scheduled: int
    active: int
    failed: int
    workers: list[WorkerInfo]
    finished_last_minute: int
    per_second: float
    stats: dict[str, int] = field(default_factory=dict)

    @property
    def workers_alive(self) -> int:
        return sum(1 for w in self.workers if w.alive)


@dataclass(frozen=True, slots=True)
class DeadJob:
    id: str
    queue: str
    task: str | None
    attempts: int
    error_type: str
    error_message: str
    failed_at_ms: int


class Admin:
    """``async with Admin(url) as admin:`` queries on one Redis connection pool."""

    def __init__(self, url: str, *, timeout: float = 5.0) -> None:
        self.url = url
        # no per-call deadline here: the CLI bounds each command
        self.redis: RedisClient = connect_any(url, connect_timeout=timeout)
        self.scripts = Scripts(self.redis)

    async def __aenter__(self) -> Admin:
        await self.redis.ping()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.redis.aclose()

    async def now_ms(self) -> int:
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
                found.update(_queue_names(keys))
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
            # a GET each, not one MGET: a cluster pipeline refuses MGET (even on one slot)
            for bucket_key in buckets:
                pipe.get(bucket_key)
            queued, sched, active, dead, stats, beats, infos, *counts = await pipe.execute()
        finished = sum(int(c) for c in counts if c is not None)
        window = (THROUGHPUT_BUCKETS - 1) * THROUGHPUT_BUCKET_MS + now % THROUGHPUT_BUCKET_MS
        workers = [
            _worker(name, wid.decode(errors="replace"), score, infos.get(wid), now)
            for wid, score in beats
        ]
        return QueueInfo(
            name=name,
            queued=int(queued),
            scheduled=int(sched),
            active=int(active),
            failed=int(dead),
            workers=workers,
            finished_last_minute=finished,
            per_second=round(finished / (window / 1000), 2) if window else 0.0,
            stats={k.decode(): int(v) for k, v in stats.items() if v.lstrip(b"-").isdigit()},
        )

    async def dead_jobs(self, name: str, limit: int) -> list[DeadJob]:
        """The newest ``limit`` dead-lettered jobs of queue ``name``."""
        keys = QueueKeys(name)
        entries: list[Any] = await self.redis.zrange(
            keys.dead, 0, limit - 1, desc=True, withscores=True
        )
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id, _ in entries:
                pipe.hmget(keys.job(job_id.decode()), "d", "a", "e")
            rows = await pipe.execute()
        out = []
        for (job_id, score), (payload, attempts, error_blob) in zip(entries, rows, strict=True):
            try:
                task: str | None = decode_envelope(payload).task
            except Exception:  # a listing must survive an unreadable job
                task = None
            error = decode_error(error_blob)
            out.append(
                DeadJob(
                    id=job_id.decode(),
                    queue=name,
                    task=task,
                    attempts=int(attempts or 0),
                    error_type=error.type,
                    error_message=error.message,
                    failed_at_ms=int(score),
                )
            )
        return out

    async def requeue(self, name: str, ids: list[str] | None) -> int:
        """Puts dead jobs (``ids``, or every one when None) back in the ready list."""
        return await self._each_dead(name, ids, self.scripts.requeue)

    async def purge(self, name: str, ids: list[str] | None) -> int:
        """Deletes dead jobs (``ids``, or every one when None)."""
        return await self._each_dead(name, ids, self.scripts.purge)

    async def _each_dead(self, name: str, ids: list[str] | None, action: Any) -> int:
        if ids is not None:
            return int(await action(name, ids))
        dead = QueueKeys(name).dead
        done = 0
        while True:  # in chunks: one Function call never holds Redis for long
            raw: list[Any] = await self.redis.zrange(dead, 0, 999)
            chunk = [i.decode() for i in raw]
            if not chunk:
                return done
            done += int(await action(name, chunk))


def _queue_names(keys: list[Any]) -> set[str]:
    """The queue names in SCAN results that are keys every live queue has one of."""
    names = set()
    for key in keys:
        m = _QUEUE_KEY.match(key if isinstance(key, bytes) else key.encode())
        if m:
            names.add(m.group(1).decode(errors="replace"))
    return names


def _worker(queue: str, wid: str, score: float, raw: bytes | None, now_ms: int) -> WorkerInfo:
    info: dict[str, Any] = {}
    if raw:
        try:
            decoded = msgspec.json.decode(raw)
            info = decoded if isinstance(decoded, dict) else {}
        except msgspec.DecodeError:
            pass
    age = max(0.0, (now_ms - score) / 1000)
    lease = info.get("lease", DEFAULT_LEASE)
    lease = float(lease) if isinstance(lease, int | float) else DEFAULT_LEASE
    pid = info.get("pid")
    return WorkerInfo(
        id=wid,
        queue=queue,
        host=str(info.get("host", "?")),
        pid=pid if isinstance(pid, int) else None,
        running=int(info.get("running", 0) or 0),
        done=int(info.get("done", 0) or 0),
        concurrency=int(info.get("concurrency", 0) or 0),
        seconds_since_heartbeat=round(age, 3),
        alive=age <= lease,
    )
