"""The figures around the jobs, for the dashboard (``aioqueue.web``): an hour
of outcomes per minute, queue latency, every worker with its uptime, and the
cron schedules with their next fire time and last tick.

Per minute: the Lua ``finish`` counts attempts ended by outcome in
``tpm:<minute>`` (kept about an hour), so an hour is one pipeline of 60
HGETALLs per queue, whatever ran. Latency is the age of the oldest ready job
(the tail of the ready list and of the CPU list: claims pop from there),
counted from when it could first run (its due time, if later than its
enqueue). Cron schedules are what workers registered (``crondef``: the
schedule and its zone) with the last tick fired (``cron``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec
from cronsim import CronSim, CronSimError
from redis.exceptions import ResponseError

from aioqueue._admin.pages import as_int, decoded
from aioqueue._protocol.envelope import decode_envelope
from aioqueue._protocol.keys import MINUTE_MS, QueueKeys
from aioqueue._redis.errors import refusal
from aioqueue.admin import Admin
from aioqueue.cron import _zone
from aioqueue.errors import ConfigurationError

__all__ = [
    "CronEntry",
    "Minute",
    "QueueGauges",
    "WorkerRow",
    "crons",
    "gauges",
    "history",
    "latency_ms",
    "workers",
]


@dataclass(frozen=True, slots=True)
class Minute:
    """Attempts that ended in the minute starting at ``start_ms``, by outcome."""

    start_ms: int
    complete: int
    failed: int
    retried: int
    aborted: int

    @property
    def finished(self) -> int:
        return self.complete + self.failed + self.aborted

    @property
    def failure_rate(self) -> float:
        """Failed attempts (dead or retried) per attempt ended; 0 with none."""
        ended = self.complete + self.failed + self.retried + self.aborted
        return (self.failed + self.retried) / ended if ended else 0.0


async def history(admin: Admin, queue: str, now_ms: int, minutes: int = 60) -> list[Minute]:
    """The last ``minutes`` minutes, oldest first (the current one, partial, last)."""
    keys = QueueKeys(queue)
    current = now_ms // MINUTE_MS
    span = range(current - minutes + 1, current + 1)
    async with admin.redis.pipeline(transaction=False) as pipe:
        for minute in span:
            pipe.hgetall(keys.outcomes_in(minute))
        replies = await pipe.execute(raise_on_error=False)
    out = []
    for minute, reply in zip(span, replies, strict=True):
        counts: dict[Any, Any] = reply if isinstance(reply, dict) else {}

        def count(name: bytes, counts: dict[Any, Any] = counts) -> int:
            return as_int(counts.get(name)) or 0

        out.append(
            Minute(
                minute * MINUTE_MS,
                count(b"complete"),
                count(b"failed"),
                count(b"retried"),
                count(b"aborted"),
            )
        )
    return out


async def latency_ms(admin: Admin, queue: str, now_ms: int) -> int | None:
    """How long the oldest ready job has waited (ms); None when none waits."""
    keys = QueueKeys(queue)
    async with admin.redis.pipeline(transaction=False) as pipe:
        pipe.lindex(keys.ready, -1)
        pipe.lindex(keys.cpu, -1)
        oldest = await pipe.execute(raise_on_error=False)
    return await _waited_ms(admin, keys, oldest, now_ms)


async def _waited_ms(admin: Admin, keys: QueueKeys, oldest: list[Any], now_ms: int) -> int | None:
    """How long the oldest of the ids at the tails (LINDEX replies) has waited."""
    ids = [decoded(i) for i in oldest if isinstance(i, bytes)]
    if not ids:
        return None
    async with admin.redis.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.hmget(keys.job(job_id), ["q", "due"])
        times = await pipe.execute(raise_on_error=False)
    since = [
        max(as_int(q) or 0, as_int(due) or 0)
        for q, due in (t for t in times if isinstance(t, list))
        if q is not None
    ]
    return max(0, now_ms - min(since)) if since else None


@dataclass(frozen=True, slots=True)
class QueueGauges:
    """One queue read for a metrics scrape; None where a key holds garbage."""

    queued: int | None
    scheduled: int | None
    active: int | None
    failed: int | None
    reclaimed: int | None  # expired leases taken back, by every claim and heartbeat
    latency_ms: int | None  # the oldest ready job's wait; None when none waits


async def gauges(admin: Admin, queue: str, now_ms: int) -> QueueGauges:
    """Depths (as ``Admin.queue`` counts them), reclaimed leases and latency: two round trips."""
    keys = QueueKeys(queue)
    async with admin.redis.pipeline(transaction=False) as pipe:
        pipe.llen(keys.ready)
        pipe.llen(keys.cpu)
        pipe.zcard(keys.sched)
        pipe.zcard(keys.active)
        pipe.zcard(keys.dead)
        pipe.hget(keys.stats, "reaped")
        pipe.lindex(keys.ready, -1)
        pipe.lindex(keys.cpu, -1)
        replies = await pipe.execute(raise_on_error=False)
    ready, aside, sched, active, dead = (
        None if isinstance(r, Exception) else as_int(r) for r in replies[:5]
    )
    queued = None if ready is None else ready + (aside or 0)
    # no field yet is 0; a stats key of the wrong type (or a garbage value) is unknown
    reaped = 0 if replies[5] is None else as_int(replies[5])
    waited = await _waited_ms(admin, keys, replies[6:], now_ms)
    return QueueGauges(queued, sched, active, dead, reaped, waited)


@dataclass(frozen=True, slots=True)
class WorkerRow:
    """A worker process as its heartbeats describe it, over every queue it serves."""

    id: str
    host: str
    pid: int | None
    queues: list[str]
    running: int
    done: int
    concurrency: int
    started_ms: int | None
    last_beat_ms: int
    alive: bool


async def workers(admin: Admin, queues: list[str], now_ms: int) -> list[WorkerRow]:
    """Every registered worker of ``queues``, alive first, then by id."""
    async with admin.redis.pipeline(transaction=False) as pipe:
        for queue in queues:
            keys = QueueKeys(queue)
            pipe.zrange(keys.workers, 0, -1, withscores=True)
            pipe.hgetall(keys.winfo)
        replies = await pipe.execute(raise_on_error=False)
    found: dict[str, WorkerRow] = {}
    for i, queue in enumerate(queues):
        beats, infos = replies[2 * i], replies[2 * i + 1]
        if isinstance(beats, Exception) or isinstance(infos, Exception):
            continue
        for raw_id, score in beats:
            wid = decoded(raw_id)
            seen = found.get(wid)
            if seen is not None:
                if queue not in seen.queues:
                    seen.queues.append(queue)
                continue
            found[wid] = _worker_row(wid, queue, int(score), infos.get(raw_id), now_ms)
    return sorted(found.values(), key=lambda w: (not w.alive, w.id))


def _worker_row(wid: str, queue: str, beat_ms: int, raw: Any, now_ms: int) -> WorkerRow:
    info: dict[str, Any] = {}
    try:
        decoded_info = msgspec.json.decode(raw) if raw else {}
        info = decoded_info if isinstance(decoded_info, dict) else {}
    except msgspec.DecodeError:
        pass

    def number(name: str) -> int:
        value = info.get(name)
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    lease = info.get("lease")
    lease_ms = lease * 1000 if isinstance(lease, int | float) else 30_000
    started = info.get("started")
    pid = info.get("pid")
    return WorkerRow(
        id=wid,
        host=str(info.get("host", "?")),
        pid=pid if isinstance(pid, int) else None,
        queues=[queue],
        running=number("running"),
        done=number("done"),
        concurrency=number("concurrency"),
        started_ms=round(started * 1000) if isinstance(started, int | float) else None,
        last_beat_ms=beat_ms,
        alive=now_ms - beat_ms <= lease_ms,
    )


@dataclass(frozen=True, slots=True)
class CronEntry:
    """One registered schedule: ``next_fire_ms`` None when it cannot be read."""

    queue: str
    name: str
    schedule: str
    timezone: str
    next_fire_ms: int | None
    last_tick_ms: int | None
    task: str | None
    problem: str | None = None


def next_fire(definition: str, now_ms: int) -> tuple[str, str, int | None, str | None]:
    """(schedule, zone, next fire ms, problem) of a ``CronJob.definition``."""
    schedule, _, zone_name = definition.rpartition(" ")
    try:
        zone = _zone(zone_name)
    except ConfigurationError as exc:
        return definition, "?", None, str(exc)
    if schedule.startswith("every ") and schedule.endswith("s"):
        try:
            interval = round(float(schedule[6:-1]) * 1000)
        except ValueError:
            return schedule, zone_name, None, "unreadable interval"
        if interval < 1:
            return schedule, zone_name, None, "unreadable interval"
        return schedule, zone_name, (now_ms // interval + 1) * interval, None
    try:
        start = datetime.fromtimestamp(now_ms / 1000, zone)
        fire = next(CronSim(schedule, start))
    except (CronSimError, StopIteration, ValueError) as exc:
        return schedule, zone_name, None, f"unreadable schedule: {exc}"
    return schedule, zone_name, round(fire.astimezone(UTC).timestamp() * 1000), None


async def crons(admin: Admin, queues: list[str], now_ms: int) -> list[CronEntry]:
    """Every schedule registered on ``queues``, by queue then name."""
    async with admin.redis.pipeline(transaction=False) as pipe:
        for queue in queues:
            keys = QueueKeys(queue)
            pipe.hgetall(keys.crondef)
            pipe.hgetall(keys.cron)
        replies = await pipe.execute(raise_on_error=False)
    entries: list[tuple[str, str, str, int | None]] = []
    for i, queue in enumerate(queues):
        defs, ticks = replies[2 * i], replies[2 * i + 1]
        if isinstance(defs, ResponseError) and "NOPERM" in str(defs):
            raise refusal(defs, f"reading the schedules of {queue!r}")
        defs = defs if isinstance(defs, dict) else {}
        ticks = ticks if isinstance(ticks, dict) else {}
        for raw_name, definition in sorted(defs.items()):
            name = decoded(raw_name)
            entries.append((queue, name, decoded(definition), as_int(ticks.get(raw_name))))
    # the task of each: from the record of its last tick's job, while it is kept
    async with admin.redis.pipeline(transaction=False) as pipe:
        for queue, name, _, last in entries:
            pipe.hget(QueueKeys(queue).job(f"cron:{name}:{last}"), "d")
        payloads = await pipe.execute(raise_on_error=False)
    out = []
    for (queue, name, definition, last), payload in zip(entries, payloads, strict=True):
        schedule, zone, fire, problem = next_fire(definition, now_ms)
        task = None
        if isinstance(payload, bytes):
            try:
                task = decode_envelope(payload).task
            except Exception:  # an unreadable payload only hides the task name
                task = None
        out.append(CronEntry(queue, name, schedule, zone, fire, last, task, problem))
    return out
