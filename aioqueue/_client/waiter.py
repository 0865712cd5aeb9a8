"""Waiting for results: one subscription per client, shared by every ``await job``.

A client subscribes to its own channel once, at connect, and waits for the
confirmation before any ``watch``. ``watch`` (one Function call, merged with
the other watches of the same loop pass) either returns a job's final state
or records the client as a waiter, atomically, and the job's end publishes to
recorded waiters only. So a completion is seen exactly once whichever comes
first, and nothing polls.

Every way a wait can end is handled:

- the job ends: its message (or the watch's reply) sets the waiting slots;
- the caller's timeout, or its cancellation: the client is unregistered
  (``unwatch``, batched), so a job nobody waits for any more publishes to nobody;
- Redis or the link goes away: the watch is tried again within the caller's
  timeout; after the subscription is back every pending job is watched again,
  since a message published meanwhile was lost;
- the ``Queue`` closes: every pending wait raises ``QueueClosed``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import anyio
import anyio.abc
import structlog
from redis.asyncio import Redis

from aioqueue._client.backend import WaiterHost
from aioqueue._client.subscriber import Subscriber
from aioqueue._protocol.keys import client_channel
from aioqueue._redis.connect import RedisClient
from aioqueue._redis.errors import UNAVAILABLE
from aioqueue._redis.retry import Backoff
from aioqueue.errors import QueueClosed, ResultTimeout

__all__ = ["FINAL", "ResultWaiter"]

log = structlog.get_logger("aioqueue.results")

FINAL = frozenset({"complete", "failed", "aborted", "missing"})
BATCH = 500  # ids per watch or unwatch call when many go at once
RETRY_FIRST, RETRY_CAP = 0.05, 1.0


class _Slot:
    """One ``await job``: set by the job's end (status and blob) or by an error."""

    __slots__ = ("blob", "error", "future", "status")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.future: asyncio.Future[None] = loop.create_future()
        self.status = ""
        self.blob = b""
        self.error: BaseException | None = None

    def set(self, status: str, blob: bytes) -> None:
        if not self.future.done():
            self.status, self.blob = status, blob
            self.future.set_result(None)

    def fail(self, error: BaseException) -> None:
        if not self.future.done():
            self.error = error
            self.future.set_result(None)


def parse_message(data: bytes) -> tuple[str, str, str, bytes] | None:
    """(queue, job id, status, blob) of a result message; None for anything else."""
    try:
        queue, job_id, status, blob = data.split(b"\0", 3)
        parsed = (queue.decode(), job_id.decode(), status.decode(), blob)
    except (ValueError, UnicodeDecodeError):
        return None
    return parsed if parsed[2] in FINAL else None


class ResultWaiter:
    """The waits of one client: slots per job, its subscription, its registrations."""

    def __init__(self, queue: WaiterHost, redis: RedisClient, client_id: str) -> None:
        self._queue = queue
        self._redis = redis
        self.client_id = client_id
        self._slots: dict[tuple[str, str], list[_Slot]] = {}
        self._subscribed = anyio.Event()
        self._closed = False
        self._tg: anyio.abc.TaskGroup | None = None
        self._generation = 0  # subscriptions made so far: a rewatch of an older one stops
        self._to_unwatch: dict[str, set[str]] = {}
        self._unwatch_wake = anyio.Event()
        self._unwatching: dict[tuple[str, str], anyio.Event] = {}
        self._round_done = anyio.Event()
        self.subscriber: Subscriber | None = None

    # -- running ------------------------------------------------------------------------

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                tg.start_soon(self._unwatch_loop)
                await self._start(tg)
                task_status.started()
        except BaseExceptionGroup as group:
            # the start failed (a refused SUBSCRIBE): the Queue's entry maps the error itself
            if len(group.exceptions) == 1 and isinstance(group.exceptions[0], Exception):
                raise group.exceptions[0] from None
            raise

    async def _start(self, tg: anyio.abc.TaskGroup) -> None:
        assert isinstance(self._redis, Redis)
        self.subscriber = Subscriber(
            self._redis,
            on_message=self._deliver,
            on_ready=self._on_ready,
            on_unready=self._on_unready,
            on_silent=self._on_silent,
            health_interval=self._queue.health_check_interval,
            label=self.client_id,
        )
        self.subscriber.channels.add(client_channel(self.client_id))
        await tg.start(self.subscriber.run)

    def _on_ready(self, first: bool) -> None:
        self._generation += 1
        self._subscribed.set()
        if not first and self._tg is not None:
            self._tg.start_soon(self._rewatch, None, self._generation)

    def _on_unready(self) -> None:
        if self._subscribed.is_set():
            self._subscribed = anyio.Event()

    def _on_silent(self, last_heard: float) -> None:
        """The subscription's link died without a FIN: so may have the command
        connections opened before it went quiet; their calls go to fresh ones."""
        lane = self._queue.scripts.lane
        if lane is not None:
            lane.discard_opened_before(last_heard)

    def _deliver(self, data: bytes) -> None:
        parsed = parse_message(data)
        if parsed is None:
            log.warning("results.bad_message", data=data[:200])
            return
        queue, job_id, status, blob = parsed
        for slot in self._slots.get((queue, job_id), ()):
            slot.set(status, blob)

    async def _ready(self, queue: str) -> None:
        """Returns once completions of ``queue``'s jobs will reach this client."""
        await self._subscribed.wait()

    async def prepare(self, queue: str) -> None:
        """Called before the first enqueue to ``queue``; the single subscription is ready."""

    # -- waiting ------------------------------------------------------------------------

    async def wait(self, queue: str, job_id: str, timeout: float | None) -> tuple[str, bytes]:
        if self._closed:
            raise QueueClosed(f"the Queue is closed: cannot await job {job_id}", job_id=job_id)
        slot = _Slot(asyncio.get_running_loop())
        key = (queue, job_id)
        slots = self._slots.get(key)
        if slots is None:
            slots = self._slots[key] = []
        slots.append(slot)
        pending = self._to_unwatch.get(queue)
        if pending:
            pending.discard(job_id)  # waited for again before it was forgotten
        try:
            # asyncio's own primitives: this runs once per request of a web app
            async with asyncio.timeout(timeout):
                await self._watch(key, slot)
                await slot.future
        except TimeoutError:
            raise ResultTimeout(
                f"no result for job {job_id} within {timeout}s", job_id=job_id
            ) from None
        finally:
            slots.remove(slot)
            if not slots and self._slots.get(key) is slots:
                del self._slots[key]
                if slot.error is None and not slot.status:
                    self._forget(queue, job_id)  # gave up: the job's end is nobody's business
        if slot.error is not None:
            raise slot.error
        return slot.status, slot.blob

    async def _watch(self, key: tuple[str, str], slot: _Slot) -> None:
        """Registers for the job's end, or learns that it ended; tries again while
        Redis is unavailable (the caller's timeout bounds it)."""
        queue, job_id = key
        backoff = Backoff(RETRY_FIRST, RETRY_CAP)
        while not slot.future.done():
            try:
                if not self._subscribed.is_set():
                    await self._ready(queue)
                unwatching = self._unwatching.get(key)
                if unwatching is not None:
                    await unwatching.wait()  # its unwatch must not land after our watch
                    continue
                status, blob = await self._queue.scripts.watch(queue, job_id, self.client_id)
            except UNAVAILABLE as exc:
                log.warning(
                    "results.watch_retry", job_id=job_id, error=str(exc), retry_in=backoff.delay
                )
                await backoff.wait()
                continue
            if status in FINAL:
                slot.set(status, blob)
            return

    async def _rewatch(self, only: str | None, generation: int) -> None:
        """After a resubscribe, completions published meanwhile were lost: ask again.

        only: just the jobs of this queue (a cluster client resubscribes per queue).
        """
        by_queue: dict[str, list[str]] = {}
        for queue, job_id in list(self._slots):
            if only is None or queue == only:
                by_queue.setdefault(queue, []).append(job_id)
        for queue, ids in by_queue.items():
            for i in range(0, len(ids), BATCH):
                chunk = ids[i : i + BATCH]
                states = await self._retrying(
                    lambda q=queue, c=chunk: self._queue.scripts.watch_many(  # type: ignore[misc]
                        q, c, self.client_id
                    ),
                    generation,
                )
                if states is None:
                    return  # closed, or a newer subscription asks again itself
                for job_id, (status, blob) in zip(chunk, states, strict=True):
                    slots = self._slots.get((queue, job_id))
                    if slots is None:
                        if status not in FINAL:
                            self._forget(queue, job_id)  # ended meanwhile: unregister
                    elif status in FINAL:
                        for slot in slots:
                            slot.set(status, blob)

    async def _retrying(
        self, call: Callable[[], Awaitable[list[tuple[str, bytes]]]], generation: int
    ) -> list[tuple[str, bytes]] | None:
        backoff = Backoff(RETRY_FIRST, RETRY_CAP)
        while not self._closed and generation == self._generation:
            try:
                return await call()
            except UNAVAILABLE as exc:
                log.warning("results.rewatch_retry", error=str(exc), retry_in=backoff.delay)
                await backoff.wait()
        return None

    # -- unregistering ------------------------------------------------------------------

    def _forget(self, queue: str, job_id: str) -> None:
        if not self._closed:
            self._to_unwatch.setdefault(queue, set()).add(job_id)
            self._unwatch_wake.set()

    async def _unwatch_loop(self) -> None:
        while True:
            await self._unwatch_wake.wait()
            self._unwatch_wake = anyio.Event()
            batch, self._to_unwatch = self._to_unwatch, {}
            for queue, ids in batch.items():
                await self._unwatch(queue, [i for i in ids if (queue, i) not in self._slots])
            done, self._round_done = self._round_done, anyio.Event()
            done.set()

    async def settled(self) -> None:
        """Returns once every unwatch asked for so far has been sent."""
        while any(self._to_unwatch.values()) or self._unwatching:
            await self._round_done.wait()

    async def _unwatch(self, queue: str, ids: list[str]) -> None:
        for i in range(0, len(ids), BATCH):
            chunk = ids[i : i + BATCH]
            done = anyio.Event()
            for job_id in chunk:
                self._unwatching[(queue, job_id)] = done
            try:
                await self._queue.scripts.unwatch(queue, chunk, self.client_id)
            except Exception as exc:  # the registration lapses with the job anyway
                log.warning("results.unwatch_failed", queue=queue, jobs=len(chunk), error=str(exc))
            finally:
                for job_id in chunk:
                    self._unwatching.pop((queue, job_id), None)
                done.set()

    async def close(self) -> None:
        """Ends every pending wait with ``QueueClosed`` and unregisters them."""
        if self._closed:
            return
        self._closed = True
        by_queue = {q: set(ids) for q, ids in self._to_unwatch.items()}
        for (queue, job_id), slots in list(self._slots.items()):
            for slot in slots:
                slot.fail(
                    QueueClosed(
                        f"the Queue was closed while job {job_id} was awaited", job_id=job_id
                    )
                )
            by_queue.setdefault(queue, set()).add(job_id)
        with anyio.move_on_after(min(1.0, self._queue.timeout), shield=True):
            for queue, ids in by_queue.items():
                await self._unwatch(queue, sorted(ids))
