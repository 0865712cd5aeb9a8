"""``aioqueue events``: the queues' event streams, printed; with ``--follow``, live.

Stream ids are the cursor (see ``aioqueue._admin.events``): what is printed
first is read up to some id per queue, and following goes on from exactly that
id, so nothing still in the stream is missed between the two, nor while Redis
is away: a dropped link or a restarted Redis is waited for with the shared
``Backoff`` and the reader goes on from the last id it printed.

Following blocks in XREAD (one call for every queue on one Redis, one per
queue on a Redis Cluster, where each stream lives in its queue's slot); it
never polls. A stream key holding garbage is skipped, said once on stderr, and
read again once a worker has set it aside.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
from datetime import UTC, datetime

import anyio
import anyio.abc
import click
from redis.asyncio.cluster import RedisCluster

from aioqueue._cli.options import discover, json_option, redis_option, timeout_option, with_admin
from aioqueue._cli.output import Failed, echo
from aioqueue._protocol.keys import QueueKeys
from aioqueue._redis.errors import UNAVAILABLE, unavailable
from aioqueue._redis.retry import Backoff, deadline
from aioqueue.admin import Admin, Event
from aioqueue.errors import RedisRefused
from aioqueue.task import DEFAULT_QUEUE

__all__ = ["events"]

BLOCK = 5.0  # seconds of one blocking read; a garbage stream is looked at again after it
PAGE = 1000  # entries per read of what is printed before following
REDISCOVER = 30.0  # seconds between looks for new queues while following all of them
_ID = re.compile(r"^(\d+)(?:-(\d+))?$")
_SEQ_MAX = 18446744073709551615  # a stream id's largest sequence number
_DETAILS = ("worker", "duration_ms", "wait_ms", "error", "due")


def _after(given: str | None) -> str | None:
    """--from as the id to read after: a full id as is, a bare ms as just before it."""
    if given is None or given == "$":
        return given
    found = _ID.match(given)
    if found is None:
        raise click.BadParameter(
            f"{given!r} is not a stream id (<ms>-<seq>, <ms>, 0 or $)", param_hint="--from"
        )
    ms, seq = int(found[1]), found[2]
    if seq is not None:
        return given
    return "0" if ms == 0 else f"{ms - 1}-{_SEQ_MAX}"  # every entry of that millisecond


def _key(event: Event) -> tuple[int, int]:
    ms, _, seq = event.id.partition("-")
    return int(ms or 0), int(seq or 0)


def _line(event: Event) -> str:
    """The human form: one compact line, like ``tail -f`` of a log."""
    when = "?"
    if event.ts is not None:
        when = datetime.fromtimestamp(event.ts / 1000, tz=UTC).strftime("%H:%M:%S.%f")[:-3]
    parts = [when, event.queue, f"{event.event:<9}", event.job, event.task or "?"]
    parts.append(f"#{event.attempt if event.attempt is not None else '?'}")
    for name in _DETAILS:
        value = event.extra.get(name)
        if value is None:
            continue
        if name in ("duration_ms", "wait_ms"):
            parts.append(f"{name.removesuffix('_ms')}={value}ms")
        elif name == "due":
            due = datetime.fromtimestamp(int(value) / 1000, tz=UTC) if value.isdigit() else None
            parts.append(f"due={due.strftime('%H:%M:%S.%f')[:-3] if due else value}")
        else:
            parts.append(f"{name}={value}")
    return " ".join(parts)


class Printer:
    """Prints events and keeps, per queue, the id of the last one printed."""

    def __init__(self, as_json: bool, after: dict[str, str]) -> None:
        self.as_json = as_json
        self.after = after

    def __call__(self, found: list[Event]) -> None:
        for event in sorted(found, key=_key):
            if self.as_json:
                click.echo(json.dumps(event.as_json(), separators=(",", ":")))
            else:
                echo(_line(event))
            self.after[event.queue] = event.id


async def _backlog(
    admin: Admin, names: list[str], after: str | None, count: int | None
) -> tuple[list[Event], dict[str, str]]:
    """What is printed first (the newest ``count``, or what follows ``after``, at most
    ``count``) and, per queue, the id to follow from."""
    found: list[Event] = []
    start: dict[str, str] = {}
    for name in names:
        if after == "$":
            start[name] = await admin.last_event_id(name)
        elif after is None:
            found += await admin.events(name, count=count or 10)
            start[name] = "0-0"
        else:
            start[name] = after
            cursor = after
            while count is None or len([e for e in found if e.queue == name]) < count:
                page = await admin.events(name, after=cursor, count=PAGE)
                found += page
                if len(page) < PAGE:
                    break
                cursor = page[-1].id
    found.sort(key=_key)
    if count is not None and after is None:
        found = found[-count:]
    elif count is not None and len(found) > count:
        # whole entries: the id to follow from names an entry, which its jobs share
        end = count
        while end < len(found) and found[end].id == found[count - 1].id:
            end += 1
        found = found[:end]
    for event in found:
        start[event.queue] = event.id
    return found, start


class Follower:
    """The loop behind ``--follow``: blocking reads from the ids in ``printer.after``."""

    def __init__(self, admin: Admin, printer: Printer, timeout: float, rediscover: bool) -> None:
        self.admin = admin
        self.printer = printer
        self.timeout = timeout
        self.rediscover = rediscover
        self.garbage: set[str] = set()
        self._cluster = isinstance(admin.redis, RedisCluster)
        self._tg: anyio.abc.TaskGroup | None = None

    async def run(self) -> None:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            if self.rediscover:
                tg.start_soon(self._discover)
            if not self._cluster:  # one XREAD for every queue
                tg.start_soon(self._loop, None)
            for name in list(self.printer.after) if self._cluster else ():
                tg.start_soon(self._loop, name)  # a cluster: one reader per queue's slot

    async def _loop(self, only: str | None) -> None:
        backoff = Backoff(0.1, 5.0, jitter=True)
        while True:
            names = [
                q for q in ([only] if only else list(self.printer.after)) if q not in self.garbage
            ]
            try:
                if not names:  # every stream it reads holds garbage for now
                    await anyio.sleep(BLOCK)
                    await self._recheck()
                    continue
                with deadline(BLOCK + self.timeout):
                    found = await self.admin.follow_events(
                        {q: self.printer.after[q] for q in names}, count=PAGE, block=BLOCK
                    )
                if backoff.failures:
                    click.echo("aioqueue: Redis answers again; following on", err=True)
                backoff.reset()
                self.printer(found)
                if not found and self.garbage:
                    await self._recheck()
            except RedisRefused as exc:
                if exc.code != "WRONGTYPE":
                    raise
                found_garbage = False
                with contextlib.suppress(*UNAVAILABLE):  # the next read says so
                    found_garbage = await self._find_garbage(names)
                if not found_garbage:
                    await backoff.wait()  # set aside meanwhile: read again, not in a tight loop
            except UNAVAILABLE as exc:
                error = unavailable(self.admin.url, exc)
                click.echo(f"aioqueue: {error}; retrying in {backoff.delay:.1f}s", err=True)
                await backoff.wait()

    async def _discover(self) -> None:
        """New queues, every REDISCOVER seconds: followed from their first entry."""
        while True:
            await anyio.sleep(REDISCOVER)
            try:
                names, _ = await self.admin.discover()
            except UNAVAILABLE:
                continue  # the readers say so
            for name in names:
                if name not in self.printer.after:
                    self.printer.after[name] = "0-0"
                    if self._cluster and self._tg is not None:
                        self._tg.start_soon(self._loop, name)

    async def _kind(self, name: str) -> str:
        kind = await self.admin.redis.type(QueueKeys(name).events)
        return kind.decode() if isinstance(kind, bytes) else str(kind)

    async def _find_garbage(self, names: list[str]) -> bool:
        """Skips the queues whose stream key holds another type; whether there was one."""
        found = False
        for name in names:
            kind = await self._kind(name)
            if kind not in ("stream", "none"):
                click.echo(
                    f"aioqueue: queue {name}: its events key holds a {kind}, not a stream;"
                    " skipped until a worker sets it aside",
                    err=True,
                )
                self.garbage.add(name)
                found = True
        return found

    async def _recheck(self) -> None:
        for name in list(self.garbage):
            if await self._kind(name) in ("stream", "none"):
                self.garbage.discard(name)


@click.command()
@click.option("--queue", "queues", multiple=True, help="Queue (repeatable).  [default: all]")
@click.option("--follow", "-f", is_flag=True, help="Keep printing events as they happen.")
@click.option(
    "--from",
    "from_id",
    help="Print what follows this stream id (<ms>-<seq>; <ms>: from that instant;"
    " 0: the oldest kept; $: only what happens from now).",
)
@click.option(
    "--count",
    type=click.IntRange(min=1),
    help=(
        "Most events printed before following (whole entries with --from)."
        "  [default: the newest 10; with --from, all]"
    ),
)
@json_option
@redis_option
@timeout_option
def events(
    queues: tuple[str, ...],
    follow: bool,
    from_id: str | None,
    count: int | None,
    as_json: bool,
    redis_url: str,
    redis_timeout: float,
) -> None:
    """What happened to the jobs: enqueued, started, retried, completed, failed, ...

    One line per event, oldest first (--json: one JSON object per line). Stream
    ids are the cursor: --from the last id you saw misses nothing still in the
    stream (each queue keeps about its newest 10,000 events).
    """
    after = _after(from_id)

    async def show(admin: Admin) -> None:
        names, _ = await discover(admin, queues)
        if not names:
            names = [DEFAULT_QUEUE]
        with deadline(redis_timeout, "Redis"):
            backlog, start = await _backlog(admin, names, after, count)
        printer = Printer(as_json, start)
        printer(backlog)
        if follow:
            await Follower(admin, printer, redis_timeout, rediscover=not queues).run()

    async def main(admin: Admin) -> None:
        # SIGINT and SIGTERM end it quietly (exit 0), from its first moment on
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with anyio.create_task_group() as tg:

                async def stop() -> None:
                    async for _ in signals:
                        tg.cancel_scope.cancel()
                        return

                tg.start_soon(stop)
                await show(admin)
                tg.cancel_scope.cancel()

    try:
        with_admin(redis_url, main, redis_timeout, bounded=not follow)
    except RedisRefused as exc:
        raise Failed(str(exc)) from None
    except BrokenPipeError:  # piped into head, which has seen enough
        pass
