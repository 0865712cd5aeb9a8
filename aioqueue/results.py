"""Waiting for results: the ``Job[R]`` handle and the one pub/sub waiter per client.

A client subscribes to its own channel once, at connect, and waits for the
confirmation before any ``watch``. ``watch`` (one Function call) either returns
a job's final state or records the client as a waiter, atomically, and the
``finish`` function publishes to recorded waiters only. So a completion is seen
exactly once whichever comes first, and nothing polls.
"""

from __future__ import annotations

import secrets
from collections.abc import Generator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import anyio
import structlog
from redis.asyncio.client import PubSub

from aioqueue.connection import UNAVAILABLE, RedisClient, mapped_errors
from aioqueue.errors import (
    JobAborted,
    JobError,
    JobFailed,
    JobNotFound,
    JobTimedOut,
    MalformedJobError,
    ResultTimeout,
)
from aioqueue.job import JobInfo, JobStatus, decode_error
from aioqueue.keys import QueueKeys, client_channel

if TYPE_CHECKING:
    from aioqueue.client import Queue

__all__ = ["Job"]

R = TypeVar("R")
log = structlog.get_logger("aioqueue.results")


class _Slot:
    __slots__ = ("blob", "event", "status")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.status = ""
        self.blob = b""

    def set(self, status: str, blob: bytes) -> None:
        if not self.event.is_set():
            self.status, self.blob = status, blob
            self.event.set()


class ResultWaiter:
    """One pub/sub connection per client, shared by every ``await job``."""

    def __init__(self, queue: Queue, redis: RedisClient) -> None:
        self._queue = queue
        self._redis = redis
        self.client_id = secrets.token_hex(8)
        self._channel = client_channel(self.client_id)
        self._slots: dict[tuple[str, str], list[_Slot]] = {}
        self._pubsub: PubSub | None = None
        self._subscribed = anyio.Event()
        # thousands of concurrent awaits must not open thousands of connections
        self._watch_slots = anyio.CapacityLimiter(32)

    async def _subscribe(self) -> PubSub:
        pubsub = self._redis.pubsub()
        await pubsub.subscribe(self._channel)
        # The confirmation proves Redis registered the subscription: only then
        # may a watch register us as a waiter.
        while True:
            msg = await pubsub.get_message(timeout=None)
            if msg and msg["type"] == "subscribe":
                return pubsub

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        backoff = 0.05
        first = True
        while True:
            try:
                self._pubsub = await self._subscribe()
                if first:
                    task_status.started()
                    first = False
                else:
                    log.info("results.resubscribed", client=self.client_id)
                    await self._rewatch()
                self._subscribed.set()
                backoff = 0.05
                async for msg in self._pubsub.listen():
                    if msg["type"] == "message":
                        self._deliver(msg["data"])
            except UNAVAILABLE as exc:
                self._subscribed = anyio.Event()
                log.warning("results.disconnected", error=str(exc), retry_in=backoff)
                await anyio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
            finally:
                if self._pubsub is not None:
                    with anyio.CancelScope(shield=True):
                        await self._pubsub.aclose()  # type: ignore[no-untyped-call]
                    self._pubsub = None

    def _deliver(self, data: bytes) -> None:
        try:
            queue, job_id, status, blob = data.split(b"\0", 3)
        except ValueError:
            log.warning("results.bad_message", data=data[:200])
            return
        for slot in self._slots.get((queue.decode(), job_id.decode()), ()):
            slot.set(status.decode(), blob)

    async def _rewatch(self, only: str | None = None) -> None:
        """After a reconnect, completions published meanwhile were lost: ask again.

        only: just the jobs of this queue (a cluster client resubscribes per queue).
        """
        for (queue, job_id), slots in list(self._slots.items()):
            if only is not None and queue != only:
                continue
            status, blob = await self._queue.scripts.watch(queue, job_id, self.client_id)
            if status == "missing" or JobStatus(status).is_final:
                for slot in slots:
                    slot.set(status, blob)

    async def prepare(self, queue: str) -> None:
        """Called before the first enqueue to ``queue``; the single subscription is ready."""

    async def _ready(self, queue: str) -> None:
        """Returns once completions of ``queue``'s jobs will reach this client."""
        await self._subscribed.wait()

    async def wait(self, queue: str, job_id: str, timeout: float | None) -> tuple[str, bytes]:
        slot = _Slot()
        key = (queue, job_id)
        self._slots.setdefault(key, []).append(slot)
        try:
            with anyio.fail_after(timeout):
                await self._ready(queue)
                async with self._watch_slots:
                    with mapped_errors(self._queue.url):
                        status, blob = await self._queue.scripts.watch(
                            queue, job_id, self.client_id
                        )
                if status == "missing" or JobStatus(status).is_final:
                    slot.set(status, blob)
                await slot.event.wait()
            return slot.status, slot.blob
        except TimeoutError:
            raise ResultTimeout(
                f"no result for job {job_id} within {timeout}s", job_id=job_id
            ) from None
        finally:
            slots = self._slots[key]
            slots.remove(slot)
            if not slots:
                del self._slots[key]


class Job(Generic[R]):
    """A handle on one job. ``await job`` gives its result or raises its error.

    ``created`` is False when an enqueue found a job with the same id already
    stored and returned that one instead.
    """

    __slots__ = ("_client", "created", "id", "queue")

    def __init__(self, client: Queue, queue: str, job_id: str, created: bool = True) -> None:
        self._client = client
        self.queue = queue
        self.id = job_id
        self.created = created

    def __await__(self) -> Generator[Any, None, R]:
        return self.result().__await__()

    async def result(self, timeout: float | None = None) -> R:
        """The job's return value; raises JobFailed/JobAborted/JobNotFound/ResultTimeout."""
        status, blob = await self._client.waiter.wait(self.queue, self.id, timeout)
        return self._decode(status, blob)

    def _decode(self, status: str, blob: bytes) -> R:
        if status == JobStatus.COMPLETE:
            value: R = self._client.serializer.loads(blob)
            return value
        if status == "missing":
            raise JobNotFound(
                f"job {self.id} not found in queue {self.queue!r}"
                " (never enqueued, or its result expired)",
                job_id=self.id,
            )
        if status == JobStatus.ABORTED:
            # the record says why when there is one: dropped for a held lock, or
            # stopped while running; aborted while queued leaves none
            why = decode_error(blob).message if blob else ""
            message = f"job {self.id} was aborted" + (f": {why}" if why else "")
            raise JobAborted(message, job_id=self.id, reason=why)
        if status == JobStatus.FAILED:
            err = decode_error(blob)
            cls = JobTimedOut if err.timed_out else JobFailed
            raise cls(
                job_id=self.id,
                exc_type=err.type,
                exc_message=err.message,
                remote_traceback=err.traceback,
            )
        raise JobError(f"job {self.id} ended with unexpected status {status!r}", job_id=self.id)

    async def info(self) -> JobInfo:
        """The job's stored state: status, attempts, times, worker, last error."""
        keys = QueueKeys(self.queue)
        fields: dict[bytes, bytes] = await self._client.read(
            lambda r: r.hgetall(keys.job(self.id))  # type: ignore[arg-type,return-value]
        )
        if not fields:
            raise JobNotFound(f"job {self.id} not found in queue {self.queue!r}", job_id=self.id)
        try:
            return JobInfo.from_hash(self.queue, self.id, fields, self._client.serializer.loads)
        except MalformedJobError:
            raise
        except Exception as exc:
            raise MalformedJobError(f"job {self.id}: {exc}") from exc

    async def status(self) -> JobStatus:
        key = QueueKeys(self.queue).job(self.id)
        raw: bytes | None = await self._client.read(
            lambda r: r.hget(key, "s")  # type: ignore[arg-type,return-value]
        )
        if raw is None:
            raise JobNotFound(f"job {self.id} not found in queue {self.queue!r}", job_id=self.id)
        try:
            return JobStatus(raw.decode())
        except ValueError:  # UnicodeDecodeError too
            raise MalformedJobError(f"job {self.id} has unknown status {raw[:50]!r}") from None

    async def abort(self) -> bool:
        """Aborts a queued or scheduled job at once, a running one in its worker.

        Returns False when the job had already ended (or does not exist).
        """
        ttl = self._client.result_ttl  # 0: not kept; negative: kept until deleted
        ttl_ms = -1 if ttl < 0 else max(int(ttl * 1000), 0 if ttl == 0 else 1)
        with mapped_errors(self._client.url):
            before = await self._client.scripts.abort(self.queue, self.id, ttl_ms)
        return before in ("queued", "scheduled", "active")

    def __repr__(self) -> str:
        return f"<Job {self.queue}/{self.id}>"
