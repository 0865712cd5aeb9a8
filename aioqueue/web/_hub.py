"""Live updates: one reader of the queues' event streams per dashboard process,
fanned out to every browser's Server-Sent Events stream.

However many browsers are open, Redis sees one blocking XREAD (one per queue
on a Redis Cluster, whose streams live in different slots) and, while events
arrive, one depth read per queue and second for the counters (``stats``
messages). Nothing is read while no browser listens: the reader starts with
the first subscriber and stops with the last.

No event is missed between a page's load and its stream: a subscriber to a
queue not read yet records the stream's last id before it is told ``ready``,
and the reader, woken from its XREAD by CLIENT UNBLOCK, reads on from there.
A browser that falls behind (``QUEUE_MAX`` messages unread) gets a ``gap``
message instead of the ones it missed and reloads what it shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from aioqueue._admin import events
from aioqueue._admin.events import Event
from aioqueue._admin.pages import decoded, events_key
from aioqueue._admin.stats import latency_ms
from aioqueue._redis.connect import connect
from aioqueue._redis.errors import UNAVAILABLE
from aioqueue.admin import Admin

__all__ = ["Hub", "Subscriber"]

log = structlog.get_logger("aioqueue.web")

BLOCK_MS = 5000  # an idle reader's XREAD; also how often it looks for new queues
DISCOVER_EVERY = 30.0
READ_COUNT = 500
QUEUE_MAX = 1000
STATS_EVERY = 1.0  # the most often a queue's counters are read while events arrive
BACKOFF_MOST = 5.0


class Subscriber:
    """One browser's stream: messages of ``queue`` (None: every queue) and, when
    ``job`` is given, of that job only (``stats`` of its queue too)."""

    def __init__(self, queue: str | None, job: str | None) -> None:
        self.queue = queue
        self.job = job
        self.messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE_MAX)
        self.lost = False

    def wants(self, message: dict[str, Any]) -> bool:
        if self.queue is not None and message.get("queue") != self.queue:
            return False
        return self.job is None or message["type"] != "event" or message.get("job") == self.job

    def offer(self, message: dict[str, Any]) -> None:
        if self.lost or not self.wants(message):
            return
        try:
            self.messages.put_nowait(message)
        except asyncio.QueueFull:
            self.lost = True  # the next get() says so, once the backlog is read

    async def get(self) -> dict[str, Any]:
        if self.messages.empty() and self.lost:
            self.lost = False
            return {"type": "gap"}
        return await self.messages.get()


class Hub:
    """The fan-out; ``queues`` lists the queues to read (discovery, cached)."""

    def __init__(self, admin: Admin, queues: Callable[[], Any]) -> None:
        self.admin = admin
        self._queues = queues
        self._subscribers: set[Subscriber] = set()
        self._ids: dict[str, str] = {}  # queue -> last stream id read
        self._generation = 0  # bumped when _ids gains a queue
        self._sent_generation = -1  # the generation of the XREAD in flight
        self._tasks: list[asyncio.Task[None]] = []
        self._reader: Redis | None = None
        self._reader_id: int | None = None
        self._dirty: set[str] = set()
        self._dirty_event = asyncio.Event()
        self._watched = asyncio.Event()  # set when _ids gains a queue
        self._lock = asyncio.Lock()
        self.xreads = 0  # XREAD calls made, for tests and the curious

    @property
    def cluster(self) -> bool:
        return isinstance(self.admin.redis, RedisCluster)

    @contextlib.asynccontextmanager
    async def subscribe(
        self, queue: str | None, job: str | None = None
    ) -> AsyncIterator[Subscriber]:
        """A subscriber, fed from the moment this yields."""
        subscriber = Subscriber(queue, job)
        async with self._lock:
            self._subscribers.add(subscriber)
            try:
                if not self._tasks:
                    await self._start()
                if queue is not None:
                    await self._watch(queue)
            except BaseException:
                self._subscribers.discard(subscriber)
                raise
        try:
            yield subscriber
        finally:
            # shielded: a browser that goes away cancels its stream, not the clean-up
            await asyncio.shield(self._leave(subscriber))

    async def _leave(self, subscriber: Subscriber) -> None:
        async with self._lock:
            self._subscribers.discard(subscriber)
            if not self._subscribers:
                await self._stop()

    async def _start(self) -> None:
        queues = await self._queues()
        for queue in queues:
            await self._watch(queue, wake=False)
        if not self.cluster:
            self._tasks.append(asyncio.create_task(self._read_all()))
        self._tasks.append(asyncio.create_task(self._stats()))

    async def _stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._ids.clear()
        if self._reader is not None:
            reader, self._reader, self._reader_id = self._reader, None, None
            with contextlib.suppress(Exception):
                await reader.aclose()

    async def _watch(self, queue: str, *, wake: bool = True) -> None:
        """Reads ``queue``'s events from now on (its stream's last id)."""
        if queue in self._ids:
            return
        try:
            self._ids[queue] = await self.admin.last_event_id(queue)
        except ResponseError:  # garbage where the stream belongs: nothing to read there
            return
        self._generation += 1
        self._watched.set()
        if self.cluster:
            self._tasks.append(asyncio.create_task(self._read_one(queue)))
        elif wake:
            await self._wake_reader()

    async def _wake_reader(self) -> None:
        """Ends the XREAD in flight if it was sent without the newest queue."""
        for _ in range(200):
            if self._sent_generation >= self._generation or self._reader_id is None:
                return
            if await self.admin.redis.client_unblock(self._reader_id):
                return
            await asyncio.sleep(0.005)  # the reader is between two XREADs: it sees the new set

    async def _read_all(self) -> None:
        """One XREAD over every queue's stream (one Redis)."""
        backoff = 0.1
        discovered = time.monotonic()
        while True:
            try:
                if self._reader is None:
                    self._reader = connect(self.admin.url, single_connection_client=True)
                    self._reader_id = int(await self._reader.client_id())
                if time.monotonic() - discovered > DISCOVER_EVERY:
                    discovered = time.monotonic()
                    for queue in await self._queues():
                        await self._watch(queue, wake=False)
                if not self._ids:  # no stream to read yet (an XREAD needs one): wait for one
                    self._watched.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._watched.wait(), BLOCK_MS / 1000)
                    continue
                self._sent_generation = self._generation
                self.xreads += 1
                found = await events.follow(self._reader, dict(self._ids), READ_COUNT, BLOCK_MS)
                backoff = 0.1
            except asyncio.CancelledError:
                raise
            except ResponseError as exc:
                await self._drop_garbage(exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MOST)
                continue
            except (*UNAVAILABLE, OSError) as exc:
                log.warning("web.events_unavailable", error=str(exc), retry_in=backoff)
                reader, self._reader, self._reader_id = self._reader, None, None
                if reader is not None:
                    with contextlib.suppress(Exception):
                        await reader.aclose()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MOST)
                continue
            self._deliver(found)

    async def _read_one(self, queue: str) -> None:
        """A blocking XREAD of one queue's stream (a cluster: one slot per call)."""
        backoff = 0.1
        while True:
            try:
                self.xreads += 1
                found = await self.admin.follow_events(
                    {queue: self._ids[queue]}, count=READ_COUNT, block=BLOCK_MS / 1000
                )
                backoff = 0.1
            except asyncio.CancelledError:
                raise
            except (*UNAVAILABLE, ResponseError, OSError) as exc:
                log.warning("web.events_unavailable", queue=queue, error=str(exc))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MOST)
                continue
            self._deliver(found)

    async def _drop_garbage(self, exc: ResponseError) -> None:
        """A stream key holding something else fails the whole XREAD: stop reading it."""
        log.warning("web.events_refused", error=str(exc))
        for queue in list(self._ids):
            with contextlib.suppress(Exception):
                kind = await self.admin.redis.type(events_key(queue))
                if decoded(kind) not in ("stream", "none"):
                    del self._ids[queue]

    def _deliver(self, found: list[Event]) -> None:
        for event in found:
            message = {"type": "event", **asdict(event)}
            for subscriber in list(self._subscribers):
                subscriber.offer(message)
            self._ids[event.queue] = event.id  # oldest first within each queue
            self._dirty.add(event.queue)
        if self._dirty:
            self._dirty_event.set()

    async def _stats(self) -> None:
        """The counters of queues that had events, at most once per STATS_EVERY."""
        while True:
            await self._dirty_event.wait()
            self._dirty_event.clear()
            dirty, self._dirty = self._dirty, set()
            try:
                now = await self.admin.now_ms()
                for queue in sorted(dirty):
                    message = await stats_message(self.admin, queue, now)
                    for subscriber in list(self._subscribers):
                        subscriber.offer(message)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away: the next events try again
                log.warning("web.stats_failed", error=str(exc))
            await asyncio.sleep(STATS_EVERY)


async def stats_message(admin: Admin, queue: str, now_ms: int) -> dict[str, Any]:
    """A queue's depths and counters, as the overview shows them."""
    info = await admin.queue(queue, now_ms)
    return {
        "type": "stats",
        "queue": queue,
        "queued": info.queued,
        "scheduled": info.scheduled,
        "active": info.active,
        "failed": info.failed,
        "per_second": info.per_second,
        "workers_alive": info.workers_alive,
        "latency_ms": await latency_ms(admin, queue, now_ms),
    }
